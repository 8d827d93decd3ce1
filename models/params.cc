#include "models/params.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "core/ops.h"

namespace moetron {

bool is_hidden_matrix(const std::string& name, ParamKind kind) {
  // A depthwise conv's taps are [channels, kernel] here but no linear map (Hugging Face stores
  // them 3-D): not one.
  return kind == ParamKind::matrix && name != "lm_head.weight" &&
         name != "model.embed_tokens.weight" && name.find(".conv1d") == std::string::npos;
}

Tensor ParamRef::value() const {
  return table_->value(id_);
}
Tensor ParamRef::grad() const {
  return table_->grad(id_);
}
Tensor ParamRef::weight() const {
  return table_->weight(id_);
}

ParamRef ParamTable::add(std::string name, Shape shape, ParamKind kind, ShardSpec shard,
                         ParamInit init) {
  MOETRON_CHECK(!allocated(), "parameter ", name, " added after allocation");
  MOETRON_CHECK(!by_name_.contains(name), "duplicate parameter ", name);
  Shape global = shape;
  if (shard.group == ShardGroup::tensor) {
    MOETRON_CHECK(((shape.size() == 2 && (shard.dim == 0 || shard.dim == 1)) ||
                   (shape.size() == 1 && shard.dim == 0)) &&
                      shard.begin < shard.global_size,
                  "bad tensor shard of ", name);
    global[static_cast<size_t>(shard.dim)] = shard.global_size;
  }
  const int id = static_cast<int>(infos_.size());
  by_name_.emplace(name, id);
  ParamInfo info;
  info.name = std::move(name);
  info.shape = std::move(shape);
  info.global_shape = std::move(global);
  info.kind = kind;
  info.shard = shard;
  info.init = init;
  numel_ += info.numel();
  infos_.push_back(std::move(info));
  return {this, id};
}

void ParamTable::allocate(const std::function<int(const ParamInfo&)>& unit_of, Device device,
                          DType compute) {
  MOETRON_CHECK(!allocated(), "parameters allocated twice");
  int units = 1;
  for (ParamInfo& p : infos_) {
    p.unit = unit_of ? unit_of(p) : 0;
    MOETRON_CHECK(p.unit >= 0, "negative unit for ", p.name);
    units = std::max(units, p.unit + 1);
  }
  // Dense segment, then expert segment; by unit within each, registration order within a unit.
  std::vector<int> order(infos_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const ParamInfo &pa = infos_[static_cast<size_t>(a)], &pb = infos_[static_cast<size_t>(b)];
    return std::pair(pa.is_expert(), pa.unit) < std::pair(pb.is_expert(), pb.unit);
  });
  units_.assign(static_cast<size_t>(units), {});
  std::vector<bool> seen_dense(static_cast<size_t>(units)), seen_expert(static_cast<size_t>(units));
  int64_t at = 0;
  dense_numel_ = 0;
  for (int id : order) {
    ParamInfo& p = infos_[static_cast<size_t>(id)];
    if (!p.is_expert()) dense_numel_ = at + p.numel();
    UnitRanges& u = units_[static_cast<size_t>(p.unit)];
    auto& seen = p.is_expert() ? seen_expert : seen_dense;
    int64_t& begin = p.is_expert() ? u.expert_begin : u.dense_begin;
    int64_t& end = p.is_expert() ? u.expert_end : u.dense_end;
    if (!seen[static_cast<size_t>(p.unit)]) begin = at;
    seen[static_cast<size_t>(p.unit)] = true;
    p.offset = at;
    at += p.numel();
    end = at;
  }
  // Units with nothing in a segment get an empty range at the segment's boundary.
  for (size_t u = 0; u < units_.size(); ++u) {
    if (!seen_dense[u]) units_[u].dense_begin = units_[u].dense_end = dense_numel_;
    if (!seen_expert[u]) units_[u].expert_begin = units_[u].expert_end = numel_;
  }
  params_ = Tensor::zeros({numel_}, DType::f32, device);
  grads_ = Tensor::zeros({numel_}, DType::f32, device);
  MOETRON_CHECK(compute == DType::f32 || compute == DType::bf16,
                "the compute dtype is f32 or bf16, not ", dtype_name(compute));
  if (compute == DType::f32) return;
  copy_offset_.assign(infos_.size(), -1);
  int64_t copied = 0;
  for (int id : order) {
    const ParamInfo& p = infos_[static_cast<size_t>(id)];
    if (!is_hidden_matrix(p.name, p.kind)) continue;
    if (copies_.empty() || copies_.back().begin + copies_.back().numel != p.offset)
      copies_.push_back({p.offset, 0, copied});
    copies_.back().numel += p.numel();
    copy_offset_[static_cast<size_t>(id)] = copied;
    copied += p.numel();
  }
  weights_ = Tensor::zeros({copied}, DType::bf16, device);
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
    // One view over several parameters: they must lie back to back in the flat buffer.
    MOETRON_CHECK(
        p.shape.size() == 2 && p.shape[1] == a.shape[1] && p.offset == a.offset + rows * a.shape[1],
        "cannot fuse ", p.name, " with ", a.name, ": not an adjacent matrix");
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

Tensor ParamTable::weight(int id) const {
  if (!weights_.defined()) return value(id);
  const ParamInfo& p = info(id);
  const int64_t at = copy_offset_.at(static_cast<size_t>(id));
  MOETRON_CHECK(at >= 0, p.name, " has no bf16 copy: it is not a hidden matrix");
  return weights_.view(at, p.shape);
}

Tensor ParamTable::fused_weight(const ParamRef& first, const ParamRef& last) const {
  Tensor values = fused_value(first, last);  // checks that they are adjacent
  if (!weights_.defined()) return values;
  // Adjacent values have adjacent copies, when the first and the last have one.
  const int64_t at = copy_offset_.at(static_cast<size_t>(first.id()));
  const int64_t last_at = copy_offset_.at(static_cast<size_t>(last.id()));
  MOETRON_CHECK(at >= 0 && last_at + info(last.id()).numel() == at + values.numel(),
                "the bf16 copies of ", info(first.id()).name, " .. ", info(last.id()).name,
                " are not adjacent");
  return weights_.view(at, values.shape());
}

void ParamTable::cast_weights() {
  for (const CopyRange& r : copies_) {
    Tensor w = weights_.view(r.at, {r.numel});
    ops::cast(params_.view(r.begin, {r.numel}), w);
  }
}

namespace {

// A parameter's initial values on the host, from its own generator (seeded by the run's seed and
// the parameter's name), so they do not depend on which parameters another rank holds, nor on
// the order parameters are drawn in.
std::vector<float> drawn_values(const ParamInfo& p, ParamInit init, uint64_t seed, float std) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the name
  for (unsigned char c : p.name) h = (h ^ c) * 1099511628211ull;
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
  std::mt19937_64 gen(seq);
  std::normal_distribution<float> normal(0.0f, std);
  std::uniform_real_distribution<float> uniform(1.0f, 16.0f);
  // PyTorch's default for convs: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the taps per channel.
  const float bound = 1.0f / std::sqrt(static_cast<float>(p.shape.back()));
  std::uniform_real_distribution<float> fan_in(-bound, bound);
  auto draw = [&] {
    switch (init) {
      case ParamInit::log_uniform_1_16:
        return std::log(uniform(gen));
      case ParamInit::fan_in_uniform:
        return fan_in(gen);
      default:
        return normal(gen);
    }
  };
  std::vector<float> host(static_cast<size_t>(p.numel()), 0.0f);
  float* out = host.data();
  if (p.shard.group != ShardGroup::tensor) {
    for (int64_t i = 0; i < p.numel(); ++i) out[i] = draw();
    return host;
  }
  // Draw the logical tensor in order and keep this rank's block (padding stays zero).
  const int64_t rows = p.global_shape[0], cols = p.numel() / p.shape[0];
  const int64_t global_cols = shape_numel(p.global_shape) / rows;
  const int64_t b = p.shard.begin, local = p.shape[static_cast<size_t>(p.shard.dim)];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < global_cols; ++c) {
      const float x = draw();
      if (p.shard.dim == 0 && r >= b && r < b + local) out[(r - b) * cols + c] = x;
      if (p.shard.dim == 1 && c >= b && c < b + local) out[r * cols + (c - b)] = x;
    }
  return host;
}

}  // namespace

// The parameters are drawn in parallel, each from its own generator, so the values are those of
// one thread (one thread took about 30 s for 0.73B parameters); their copies to the device go one
// at a time, and the host holds at most a parameter per thread.
void ParamTable::init(uint64_t seed, float std) {
  MOETRON_CHECK(allocated(), "init before allocate");
  std::exception_ptr failed;
  // No exception may leave an OpenMP block: the first is kept and rethrown after the loop.
  const auto keep = [&failed](std::exception_ptr e) {
#pragma omp critical(moetron_param_init_error)
    if (!failed) failed = std::move(e);
  };
#pragma omp parallel for schedule(dynamic)
  for (int id = 0; id < static_cast<int>(infos_.size()); ++id) {
    const ParamInfo& p = infos_[static_cast<size_t>(id)];
    ParamInit init = p.init;
    if (init == ParamInit::by_kind && p.kind == ParamKind::norm) init = ParamInit::ones;
    if (init == ParamInit::by_kind && p.kind == ParamKind::buffer) init = ParamInit::zeros;
    const bool constant = init == ParamInit::ones || init == ParamInit::zeros;
    std::vector<float> host;
    try {
      if (!constant) host = drawn_values(p, init, seed, std);
    } catch (...) {
      keep(std::current_exception());
      continue;
    }
#pragma omp critical(moetron_param_init)
    try {
      Tensor v = value(id);
      if (constant)
        ops::fill(v, init == ParamInit::ones ? 1.0f : 0.0f);
      else
        ops::copy_from_host(std::span<const float>(host), v);
    } catch (...) {
      keep(std::current_exception());
    }
  }
  if (failed) std::rethrow_exception(failed);
}

}  // namespace moetron
