#include "parallel/grad_sync.h"

#include <algorithm>
#include <chrono>

namespace moetron {
namespace {

// Appends [b, e), merging it with the previous range when they touch.
void add_range(std::vector<ElementRange>& ranges, int64_t b, int64_t e) {
  if (b >= e) return;
  if (!ranges.empty() && ranges.back().second == b)
    ranges.back().second = e;
  else
    ranges.emplace_back(b, e);
}

}  // namespace

std::vector<int64_t> GradSync::part_counts(int64_t begin, int64_t end, const Segment& seg) {
  std::vector<int64_t> counts(static_cast<size_t>(seg.size));
  const int64_t n = end - begin;
  for (int i = 0; i < seg.size; ++i)
    counts[static_cast<size_t>(i)] = n * (i + 1) / seg.size - n * i / seg.size;
  return counts;
}

GradSync::GradSync(ParamTable& params, const ProcessGroups& groups, int64_t max_elements_per_call)
    : params_(params),
      max_per_call_(max_elements_per_call),
      zero1_(groups.layout().zero1),
      overlap_(groups.layout().overlap_grad_reduce) {
  const Layout& l = groups.layout();
  if (l.dp > 1) dense_ = {groups.dp(), groups.dp_rank(), l.dp};
  if (l.edp() > 1) expert_ = {groups.edp(), groups.edp_rank(), l.edp()};
  started_.assign(params.units().size(), false);

  // Owned: this rank's part of each call's range (everything without ZeRO-1).
  auto add_owned = [&](std::vector<ElementRange>& owned, int64_t begin, int64_t end,
                       const Segment& seg) {
    if (!zero1_ || seg.size == 1) return add_range(owned, begin, end);
    for_each_call(begin, end, [&](int64_t b, int64_t e) {
      const std::vector<int64_t> counts = part_counts(b, e, seg);
      int64_t at = b;
      for (int i = 0; i < seg.rank; ++i) at += counts[static_cast<size_t>(i)];
      add_range(owned, at, at + counts[static_cast<size_t>(seg.rank)]);
    });
  };
  std::vector<ElementRange> dense_owned, expert_owned;
  for (const UnitRanges& u : params.units()) {
    add_owned(dense_owned, u.dense_begin, u.dense_end, dense_);
    add_owned(expert_owned, u.expert_begin, u.expert_end, expert_);
  }
  std::sort(dense_owned.begin(), dense_owned.end());
  std::sort(expert_owned.begin(), expert_owned.end());
  for (const auto& r : dense_owned) add_range(owned_, r.first, r.second);
  for (const auto& r : expert_owned) add_range(owned_, r.first, r.second);

  // The norm counts each logical element once: a reduced gradient is the same on every rank of
  // its reduction group, so without ZeRO-1 only that group's rank 0 counts it (with ZeRO-1 the
  // owner of the part); a tensor-parallel replicated parameter is also the same on every
  // tensor-parallel rank, so only tp rank 0 counts it.
  const bool dense_counted = zero1_ || dense_.rank == 0;
  const bool expert_counted = zero1_ || expert_.rank == 0;
  for (const auto& [b, e] : owned_) {
    for (const ParamInfo& p : params.infos()) {
      const int64_t pb = std::max(b, p.offset), pe = std::min(e, p.offset + p.numel());
      if (pb >= pe) continue;
      const bool counted = p.is_expert() ? expert_counted
                                         : dense_counted && (p.shard.group == ShardGroup::tensor ||
                                                             groups.tp_rank() == 0);
      if (counted) add_range(norm_ranges_, pb, pe);
    }
  }
}

void GradSync::begin() {
  MOETRON_CHECK(pending_.empty(), "gradient reductions still pending");
  std::fill(started_.begin(), started_.end(), false);
  exposed_seconds_ = 0.0;
}

void GradSync::start(int unit) {
  if (started_[static_cast<size_t>(unit)]) return;
  started_[static_cast<size_t>(unit)] = true;
  const UnitRanges& u = params_.units()[static_cast<size_t>(unit)];
  Tensor& grads = params_.flat_grads();
  auto reduce = [&](int64_t begin, int64_t end, const Segment& seg) {
    if (seg.comm == nullptr) return;
    for_each_call(begin, end, [&](int64_t b, int64_t e) {
      Tensor range = grads.view(b, {e - b});
      if (zero1_)
        pending_.push_back(seg.comm->reduce_scatter_async(range, part_counts(b, e, seg)));
      else
        pending_.push_back(seg.comm->all_reduce_async(range));
    });
  };
  reduce(u.dense_begin, u.dense_end, dense_);
  reduce(u.expert_begin, u.expert_end, expert_);
}

void GradSync::unit_ready(int unit) {
  if (overlap_) start(unit);
  for (auto& r : pending_) r->test();
}

void GradSync::finish() {
  for (int u = 0; u < static_cast<int>(started_.size()); ++u) start(u);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& r : pending_) r->wait();
  pending_.clear();
  exposed_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GradSync::gather_parameters() {
  if (zero1_) gather(params_.flat_values());
}

void GradSync::gather_gradients() {
  if (zero1_) gather(params_.flat_grads());
}

void GradSync::gather(Tensor& values) {
  std::vector<std::unique_ptr<CommRequest>> gathers;
  auto gather = [&](int64_t begin, int64_t end, const Segment& seg) {
    if (seg.comm == nullptr) return;
    for_each_call(begin, end, [&](int64_t b, int64_t e) {
      Tensor range = values.view(b, {e - b});
      gathers.push_back(seg.comm->all_gather_async(range, part_counts(b, e, seg)));
    });
  };
  for (const UnitRanges& u : params_.units()) {
    gather(u.dense_begin, u.dense_end, dense_);
    gather(u.expert_begin, u.expert_end, expert_);
  }
  for (auto& g : gathers) g->wait();
}

}  // namespace moetron
