// The parameter table: every parameter's Hugging Face name, logical shape, shard spec and
// place in one flat buffer (gradients in a second buffer at the same offsets). This one table
// drives initialisation, the optimizer, gradient sync, checkpoints and export.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace moetron {

// Which process group splits a parameter, and along which dim (dim -1 = replicated).
enum class ShardGroup : uint8_t { replicated, tensor, expert };
struct ShardSpec {
  ShardGroup group = ShardGroup::replicated;
  int dim = -1;
};

// buffer: state saved with the model but not trained (no gradient, no optimizer), e.g. the
// router's balancing bias.
enum class ParamKind : uint8_t { matrix, norm, embedding, buffer };

struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // elements into the flat buffers
  ParamKind kind = ParamKind::matrix;
  ShardSpec shard;
};

class ParamTable;

// A layer's handle to one parameter: valid once the table is allocated.
class ParamRef {
 public:
  ParamRef() = default;
  ParamRef(const ParamTable* table, int id) : table_(table), id_(id) {}
  Tensor value() const;
  Tensor grad() const;
  int id() const { return id_; }

 private:
  const ParamTable* table_ = nullptr;
  int id_ = -1;
};

class ParamTable {
 public:
  // Registration: names must be unique; parameters are laid out in registration order, so
  // consecutive ones can be used as one fused matrix (see fused_value).
  ParamRef add(std::string name, Shape shape, ParamKind kind, ShardSpec shard = {});
  // Allocates the flat parameter and gradient buffers (gradients zeroed).
  void allocate();
  bool allocated() const { return params_.defined(); }

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int id) const { return infos_.at(static_cast<size_t>(id)); }
  int find(const std::string& name) const;  // -1 when absent
  int64_t numel() const { return numel_; }

  Tensor value(int id) const;
  Tensor grad(int id) const;
  // Parameters first..last (consecutive, same trailing dims) as one [sum of rows, cols] view.
  Tensor fused_value(const ParamRef& first, const ParamRef& last) const;
  Tensor fused_grad(const ParamRef& first, const ParamRef& last) const;

  Tensor& flat_values() { return params_; }
  Tensor& flat_grads() { return grads_; }
  const Tensor& flat_values() const { return params_; }
  const Tensor& flat_grads() const { return grads_; }

  // Normal(0, std) for matrices and embeddings, ones for norms, zeros for buffers; each from its
  // own generator seeded by (seed, name), so the init does not depend on layout or order.
  void init(uint64_t seed, float std);

 private:
  Tensor fused(const Tensor& flat, const ParamRef& first, const ParamRef& last) const;

  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  int64_t numel_ = 0;
  Tensor params_, grads_;
};

}  // namespace moetron
