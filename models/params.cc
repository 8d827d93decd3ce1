#include "models/params.h"

#include <random>

#include "core/ops.h"

namespace moetron {

Tensor ParamRef::value() const {
  return table_->value(id_);
}
Tensor ParamRef::grad() const {
  return table_->grad(id_);
}

ParamRef ParamTable::add(std::string name, Shape shape, ParamKind kind, ShardSpec shard) {
  MOETRON_CHECK(!allocated(), "parameter ", name, " added after allocation");
  MOETRON_CHECK(!by_name_.contains(name), "duplicate parameter ", name);
  const int id = static_cast<int>(infos_.size());
  by_name_.emplace(name, id);
  const int64_t n = shape_numel(shape);
  infos_.push_back({std::move(name), std::move(shape), numel_, kind, shard});
  numel_ += n;
  return {this, id};
}

void ParamTable::allocate() {
  MOETRON_CHECK(!allocated(), "parameters allocated twice");
  params_ = Tensor::zeros({numel_});
  grads_ = Tensor::zeros({numel_});
}

int ParamTable::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

Tensor ParamTable::value(int id) const {
  const ParamInfo& p = info(id);
  return params_.view(p.offset, p.shape);
}

Tensor ParamTable::grad(int id) const {
  const ParamInfo& p = info(id);
  return grads_.view(p.offset, p.shape);
}

Tensor ParamTable::fused(const Tensor& flat, const ParamRef& first, const ParamRef& last) const {
  const ParamInfo& a = info(first.id());
  int64_t rows = 0;
  for (int id = first.id(); id <= last.id(); ++id) {
    const ParamInfo& p = info(id);
    MOETRON_CHECK(p.shape.size() == 2 && p.shape[1] == a.shape[1], "cannot fuse ", p.name);
    rows += p.shape[0];
  }
  return flat.view(a.offset, {rows, a.shape[1]});
}

Tensor ParamTable::fused_value(const ParamRef& first, const ParamRef& last) const {
  return fused(params_, first, last);
}

Tensor ParamTable::fused_grad(const ParamRef& first, const ParamRef& last) const {
  return fused(grads_, first, last);
}

void ParamTable::init(uint64_t seed, float std) {
  MOETRON_CHECK(allocated(), "init before allocate");
  for (int id = 0; id < static_cast<int>(infos_.size()); ++id) {
    const ParamInfo& p = infos_[id];
    Tensor v = value(id);
    if (p.kind == ParamKind::norm || p.kind == ParamKind::buffer) {
      ops::fill(v, p.kind == ParamKind::norm ? 1.0f : 0.0f);
      continue;
    }
    uint64_t h = 1469598103934665603ull;  // FNV-1a of the name
    for (unsigned char c : p.name) h = (h ^ c) * 1099511628211ull;
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                      static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
    std::mt19937_64 gen(seq);
    std::normal_distribution<float> normal(0.0f, std);
    for (float& x : v.span<float>()) x = normal(gen);
  }
}

}  // namespace moetron
