// The parameter table: every parameter's Hugging Face name, local and logical shape, shard spec
// and place in one flat buffer (gradients in a second buffer at the same offsets). This one
// table drives initialisation, the optimizer, gradient sync, checkpoints and export.
//
// The flat buffer has two segments, one per reduction group: dense parameters (reduced over the
// data-parallel group) first, then routed-expert parameters (reduced over the expert-data-
// parallel group). Within a segment parameters are ordered by gradient-ready unit (the order in
// which backward finishes them), so each unit's gradients are one contiguous range per segment.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace moetron {

// How this rank's copy of a parameter relates to the logical tensor.
//  replicated: the whole tensor, the same on every rank.
//  tensor: a block of the tensor-parallel split along `dim`: global indices [begin, begin +
//    local extent) of a logical extent `global_size`; the block may run past it (vocabulary
//    padding), and those rows are zero and never trained.
//  expert: a routed expert's whole tensor, held by the expert-parallel rank that owns it.
enum class ShardGroup : uint8_t { replicated, tensor, expert };
struct ShardSpec {
  ShardGroup group = ShardGroup::replicated;
  int dim = -1;
  int64_t begin = 0, global_size = 0;

  static ShardSpec tensor(int dim, int64_t begin, int64_t global_size) {
    return {ShardGroup::tensor, dim, begin, global_size};
  }
  static ShardSpec expert() { return {ShardGroup::expert, -1, 0, 0}; }
};

// buffer: state saved with the model but not trained (no gradient, no optimizer), e.g. the
// router's balancing bias.
enum class ParamKind : uint8_t { matrix, norm, embedding, buffer };
// How a parameter starts (ParamTable::init): by its kind (normal for matrices and embeddings,
// ones for norms, zeros for buffers), or as given: zeros (a zero-centred norm's offset), ones,
// log U(1, 16) (Gated DeltaNet's A_log: decay rates exp(A_log) spread over [1, 16]), or
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in the last dim (a depthwise conv's taps,
// PyTorch's default).
enum class ParamInit : uint8_t { by_kind, zeros, ones, log_uniform_1_16, fan_in_uniform };

struct ParamInfo {
  std::string name;
  Shape shape;         // this rank's block
  Shape global_shape;  // the logical tensor (Hugging Face shape)
  int64_t offset = 0;  // elements into the flat buffers
  ParamKind kind = ParamKind::matrix;
  ShardSpec shard;
  ParamInit init = ParamInit::by_kind;
  int unit = 0;  // gradient-ready unit

  bool is_expert() const { return shard.group == ShardGroup::expert; }
  int64_t numel() const { return shape_numel(shape); }
};

// Whether a parameter is one of the network's hidden matrices: a trained 2-D weight that is
// neither the embedding nor the output head nor a conv's taps (Moonlight's and Megatron's rule for
// the parameters Muon updates; the router's weight is one, the norms and the balancing bias are
// not).
bool is_hidden_matrix(const std::string& name, ParamKind kind);
// A rule on parameters by name and kind (an optimizer's parameter group: every rank agrees on
// it, for the experts it does not hold too).
using ParamFilter = std::function<bool(const std::string& name, ParamKind kind)>;

// One gradient-ready unit's ranges in the two segments: [begin, end) element offsets.
struct UnitRanges {
  int64_t dense_begin = 0, dense_end = 0, expert_begin = 0, expert_end = 0;
};

class ParamTable;

// A layer's handle to one parameter: valid once the table is allocated.
class ParamRef {
 public:
  ParamRef() = default;
  ParamRef(const ParamTable* table, int id) : table_(table), id_(id) {}
  Tensor value() const;
  Tensor grad() const;
  // The weight a projection's GEMM multiplies by: value(), or its bf16 copy (ParamTable::weight).
  Tensor weight() const;
  int id() const { return id_; }

 private:
  const ParamTable* table_ = nullptr;
  int id_ = -1;
};

class ParamTable {
 public:
  // Registration: names must be unique. `shape` is this rank's block. Parameters registered one
  // after the other with the same unit stay adjacent, so they can be used as one fused matrix
  // (see fused_value).
  ParamRef add(std::string name, Shape shape, ParamKind kind, ShardSpec shard = {},
               ParamInit init = ParamInit::by_kind);
  // Lays out the segments (unit_of gives each parameter's gradient-ready unit, 0 if absent) and
  // allocates the flat parameter and gradient buffers on `device` (gradients zeroed). With
  // `compute` bf16 it also allocates the bf16 copies of the matrices (weight(), cast_weights()).
  void allocate(const std::function<int(const ParamInfo&)>& unit_of = {}, Device device = {},
                DType compute = DType::f32);
  bool allocated() const { return params_.defined(); }

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int id) const { return infos_.at(static_cast<size_t>(id)); }
  int find(const std::string& name) const;  // -1 when absent
  int64_t numel() const { return numel_; }
  int64_t dense_numel() const { return dense_numel_; }             // the expert segment starts here
  const std::vector<UnitRanges>& units() const { return units_; }  // indexed by unit

  Tensor value(int id) const;
  Tensor grad(int id) const;
  // Parameters first..last (consecutive, same trailing dims) as one [sum of rows, cols] view.
  Tensor fused_value(const ParamRef& first, const ParamRef& last) const;
  Tensor fused_grad(const ParamRef& first, const ParamRef& last) const;

  // Mixed precision (docs/precision.md): the fp32 values are the master weights; with a bf16
  // compute dtype every hidden matrix (is_hidden_matrix) also has a bf16 copy, which the
  // projections multiply by. cast_weights() makes the copies from the masters (the caller does it
  // once per optimizer step, after the update, and before any other forward pass); without
  // copies it does nothing and weight() is value().
  DType compute_dtype() const { return weights_.defined() ? DType::bf16 : DType::f32; }
  int64_t weight_copies_numel() const { return weights_.defined() ? weights_.numel() : 0; }
  Tensor weight(int id) const;
  Tensor fused_weight(const ParamRef& first, const ParamRef& last) const;
  void cast_weights();

  Tensor& flat_values() { return params_; }
  Tensor& flat_grads() { return grads_; }
  const Tensor& flat_values() const { return params_; }
  const Tensor& flat_grads() const { return grads_; }

  // Each parameter as its ParamInit says (normal(0, std) for matrices and embeddings), random
  // ones from their own generator seeded by (seed, name) over the logical tensor, of which this
  // rank keeps its block: the init does not depend on the layout or the order.
  void init(uint64_t seed, float std);

 private:
  Tensor fused(const Tensor& flat, const ParamRef& first, const ParamRef& last) const;

  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  int64_t numel_ = 0, dense_numel_ = 0;
  std::vector<UnitRanges> units_;
  Tensor params_, grads_;
  // The bf16 copies back to back (undefined in fp32); each run of adjacent copied parameters is
  // one range: its offset in the flat values, its length, its offset in weights_.
  Tensor weights_;
  struct CopyRange {
    int64_t begin = 0, numel = 0, at = 0;
  };
  std::vector<CopyRange> copies_;
  std::vector<int64_t> copy_offset_;  // by id: the element offset in weights_, -1 without a copy
};

}  // namespace moetron
