// Gradient reduction over the data-parallel groups, bucketed by gradient-ready unit and started
// while backward is still running (llm.c's per-layer reduction, Megatron's buckets): dense
// gradients over the data-parallel group, routed-expert gradients over the expert-data-parallel
// group (the ranks that hold the same experts). With ZeRO-1 each unit is reduce-scattered
// instead: every rank owns 1/n of each unit's range, updates only that, and the updated
// parameters are all-gathered afterwards. Reductions are sums: the trainer scales the loss by
// 1 / (grad_accum_steps * dp) so that the sum is the mean over the global batch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/communicator.h"
#include "models/params.h"
#include "parallel/process_groups.h"

namespace moetron {

// [begin, end) element offsets into the flat buffers.
using ElementRange = std::pair<int64_t, int64_t>;

class GradSync {
 public:
  // One MPI call takes an int count: a longer range is reduced (and gathered) as several calls
  // of at most this many elements.
  static constexpr int64_t kMaxElementsPerCall = int64_t{1} << 30;

  GradSync(ParamTable& params, const ProcessGroups& groups,
           int64_t max_elements_per_call = kMaxElementsPerCall);

  // Before the last micro-batch's backward: nothing is pending.
  void begin();
  // Backward finished `unit`: with overlap on, its reductions start now. Any call also lets
  // the pending ones progress.
  void unit_ready(int unit);
  // Starts every reduction not started yet and waits for all of them.
  void finish();
  // ZeRO-1: after the update, every rank gets everyone's updated parameters. Otherwise nothing.
  void gather_parameters();
  // ZeRO-1: after finish(), every rank gets everyone's reduced gradients (an optimizer that
  // needs whole matrices, Muon, on every rank). Otherwise nothing.
  void gather_gradients();

  // The elements this rank updates (all of them without ZeRO-1).
  const std::vector<ElementRange>& owned() const { return owned_; }
  // The elements this rank adds to the global gradient norm: every logical gradient element
  // is counted by exactly one rank of the world (see grad_sync.cc).
  const std::vector<ElementRange>& norm_ranges() const { return norm_ranges_; }
  // Seconds this step waited for reductions after backward (the part not hidden).
  double exposed_seconds() const { return exposed_seconds_; }
  // Whether reductions start during backward (the layout's overlap_grad_reduce at first).
  void set_overlap(bool overlap) { overlap_ = overlap; }

 private:
  struct Segment {
    Communicator* comm = nullptr;  // null when the group is this rank alone
    int rank = 0, size = 1;
  };
  void start(int unit);
  // All-gathers each unit's parts of `flat` over its group (ZeRO-1).
  void gather(Tensor& flat);
  // The parts of [begin, end) that the ranks of `seg` own under ZeRO-1.
  static std::vector<int64_t> part_counts(int64_t begin, int64_t end, const Segment& seg);

  // Calls f(b, e) for the consecutive pieces of [begin, end) that one call each reduces.
  template <class F>
  void for_each_call(int64_t begin, int64_t end, F f) const {
    for (int64_t b = begin; b < end; b += max_per_call_) f(b, std::min(end, b + max_per_call_));
  }

  ParamTable& params_;
  int64_t max_per_call_;
  bool zero1_, overlap_;
  Segment dense_, expert_;
  std::vector<bool> started_;
  std::vector<std::unique_ptr<CommRequest>> pending_;
  std::vector<ElementRange> owned_, norm_ranges_;
  double exposed_seconds_ = 0.0;
};

}  // namespace moetron
