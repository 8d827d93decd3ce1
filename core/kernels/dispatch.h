// The MoE dispatch plan (core/ops.h plan_dispatch), host and device alike, by sorts and binary
// searches instead of the CPU backend's serial counting, so a device runs it with Thrust's
// stable sort and the host with std::stable_sort over the same keys: the same permutation.
//   1. With a capacity: the slots (token t, choice j) = t * k + j stably sorted by their score
//      for their expert, highest first (ties keep slot order: the lower token first).
//   2. That order stably sorted by expert: each expert's run, best first. The slot at position p
//      of expert e's run [start_e, end_e) is kept when p - start_e < capacity (always without
//      one); counts[e] = end_e - start_e.
//   3. The slots in slot order keyed by expert (a dropped slot by `experts`, after all), stably
//      sorted: position p is permuted row p, so each expert's rows keep token order; offsets[e]
//      is the first position of key e, and offsets[experts] the kept rows.
#pragma once

#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

// The score of slot i for the expert it chose (step 1's key).
MT_HD float dispatch_score(const int32_t* idx, const float* scores, int64_t k, int64_t experts,
                           int64_t i) {
  return scores[(i / k) * experts + idx[i]];
}

// The first position of a key >= e in sorted[0, n) (n when none is as large): a lower bound.
template <typename T>
MT_HD int64_t first_of(const T* sorted, int64_t n, int64_t e) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(sorted[mid]) < e)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Step 2 at position p of the slots sorted by expert (`order` the slots, `experts_sorted` their
// experts): whether that slot is kept.
MT_HD void dispatch_keep_at(const int32_t* experts_sorted, const int32_t* order, int64_t n,
                            int64_t capacity, uint8_t* kept, int64_t p) {
  const int64_t start = first_of(experts_sorted, n, experts_sorted[p]);
  kept[order[p]] = capacity <= 0 || p - start < capacity ? 1 : 0;
}

// Step 3's key of slot i.
MT_HD int32_t dispatch_row_key(const int32_t* idx, const uint8_t* kept, int64_t experts,
                               int64_t i) {
  return kept[i] ? idx[i] : static_cast<int32_t>(experts);
}

// counts[e] from step 2's sorted experts, offsets[e] from step 3's keys (e in [0, experts]).
MT_HD void dispatch_offsets_at(const int32_t* experts_sorted, const int32_t* row_keys, int64_t n,
                               int64_t experts, int64_t* counts, int64_t* offsets, int64_t e) {
  if (e < experts) counts[e] = first_of(experts_sorted, n, e + 1) - first_of(experts_sorted, n, e);
  offsets[e] = first_of(row_keys, n, e);
}

// Position p of step 3: row p's token, and the slot's row (-1 when dropped).
MT_HD void dispatch_rows_at(const int32_t* row_order, const int64_t* offsets, int64_t experts,
                            int64_t k, int32_t* row_token, int32_t* slot_row, int64_t p) {
  const int32_t slot = row_order[p];
  const bool kept = p < offsets[experts];
  slot_row[slot] = kept ? static_cast<int32_t>(p) : -1;
  if (kept) row_token[p] = static_cast<int32_t>(slot / k);
}

// A tensor-parallel rank's share of a plan (core/ops.h PlanSlice): the kept rows of the tokens
// [begin, end), in plan order. Expert e's rows hold ascending tokens, so its rows of the slice
// are one run [first[e], first[e] + counts[e]) of the plan's, found by two binary searches.
MT_HD void slice_run_at(const int32_t* row_token, const int64_t* offsets, int64_t begin,
                        int64_t end, int64_t* first, int64_t* counts, int64_t e) {
  const int32_t* run = row_token + offsets[e];
  const int64_t n = offsets[e + 1] - offsets[e];
  first[e] = offsets[e] + first_of(run, n, begin);
  counts[e] = offsets[e] + first_of(run, n, end) - first[e];
}

// Where each expert's rows start in the slice: offsets [experts + 1] (one thread; experts are
// few).
MT_HD void slice_offsets_of(const int64_t* counts, int64_t experts, int64_t* offsets) {
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] = offsets[e] + counts[e];
}

// Slot s of the plan: its row of the slice (-1 when dropped or its token lies outside), and
// that row's token (each kept slot of the slice is the one slot of its row).
MT_HD void slice_slot_at(const int32_t* slot_row, const int64_t* offsets, int64_t experts,
                         int64_t k, int64_t begin, int64_t end, const int64_t* first,
                         const int64_t* slice_offsets, int32_t* slice_row_token,
                         int32_t* slice_slot_row, int64_t s) {
  const int64_t t = s / k, r = slot_row[s];
  if (t < begin || t >= end || r < 0) {
    slice_slot_row[s] = -1;
    return;
  }
  const int64_t e = first_of(offsets + 1, experts, r + 1);  // the expert whose run holds row r
  const int64_t row = slice_offsets[e] + r - first[e];
  slice_slot_row[s] = static_cast<int32_t>(row);
  slice_row_token[row] = static_cast<int32_t>(t);
}

}  // namespace moetron::kernels
