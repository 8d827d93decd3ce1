// The vocabulary-parallel cross-entropy's per-row pieces (core/ops.h: ce_shard_stats,
// ce_shard_backward), host and device alike. Stats: a warp per row (core/kernels/warp.h): the
// lanes' maxima, butterfly max; the lanes' sums of exp(z - max), butterfly sum; lane 0 writes
// (max, sum, the target's logit or 0). Combine: a thread per row, then the rows' losses summed
// in order. Backward: a thread per element.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"
#include "core/kernels/warp.h"

namespace moetron::kernels {

// This rank's block of the vocabulary: columns [0, valid) are ids first .. first + valid - 1.
struct VocabBlock {
  int64_t cols, first, valid;
};

MT_HD float ce_lane_max(const float* z, const VocabBlock& v, int lane) {
  float mx = -INFINITY;
  for (int64_t c = lane; c < v.valid; c += kWarp) mx = z[c] > mx ? z[c] : mx;
  return mx;
}

MT_HD float ce_lane_sum(const float* z, const VocabBlock& v, float mx, int lane) {
  float sum = 0.0f;
  for (int64_t c = lane; c < v.valid; c += kWarp) sum += expf(z[c] - mx);
  return sum;
}

MT_HD void ce_write_stats(const float* z, int32_t target, const VocabBlock& v, float mx, float sum,
                          float* stats) {
  const int64_t t = target - v.first;
  stats[0] = v.valid > 0 ? mx : 0.0f;
  stats[1] = sum;
  stats[2] = t >= 0 && t < v.valid ? z[t] : 0.0f;  // exactly one block holds it
}

// Element i of logits [rows, cols] -> its gradient: grad_scale * (softmax - onehot), padding 0.
MT_HD void ce_backward_at(float* logits, const int32_t* targets, const VocabBlock& v,
                          const float* lse, float grad_scale, int64_t i) {
  const int64_t r = i / v.cols, c = i % v.cols;
  if (c >= v.valid) {
    logits[i] = 0.0f;
    return;
  }
  float g = expf(logits[i] - lse[r]) * grad_scale;
  if (c == targets[r] - v.first) g -= grad_scale;
  logits[i] = g;
}

// The shards' stats all_stats [parts, rows, 3] of row r combined: lse[r], and the row's loss
// lse - the target's logit, in double (a shard with no columns, sum 0, is left out).
MT_HD double ce_combine_row(const float* all_stats, int64_t parts, int64_t rows, float* lse,
                            int64_t r) {
  float mx = -INFINITY;
  for (int64_t p = 0; p < parts; ++p) {
    const float* s = all_stats + (p * rows + r) * 3;
    if (s[1] > 0.0f && s[0] > mx) mx = s[0];
  }
  double sum = 0.0, target = 0.0;
  for (int64_t p = 0; p < parts; ++p) {
    const float* s = all_stats + (p * rows + r) * 3;
    if (s[1] > 0.0f) sum += static_cast<double>(s[1]) * exp(static_cast<double>(s[0] - mx));
    target += s[2];
  }
  const double l = log(sum) + mx;
  lse[r] = static_cast<float>(l);
  return l - target;
}

}  // namespace moetron::kernels
