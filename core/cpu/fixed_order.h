// Reductions whose result depends only on the values, never on the data's alignment, the
// number of rows around them or the threads: 16 lanes of fused multiply-adds over the
// elements in order, then the lanes summed in one fixed tree. Decoding builds on them so that a
// position's logits have the same bits fed alone or in a chunk (docs/generate.md). GCC
// vectorizes the lane loops (one 16-wide or two 8-wide FMAs); std::fma pins the rounding
// whatever -ffp-contract says.
#pragma once

#include <cmath>
#include <cstdint>

namespace moetron::cpu {

inline constexpr int kLanes = 16;

inline float reduce_lanes(float (&acc)[kLanes]) {
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0];
}

inline float dot_fixed(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] = std::fma(a[i + l], b[i + l], acc[l]);
  for (int l = 0; i < n; ++i, ++l) acc[l] = std::fma(a[i], b[i], acc[l]);
  return reduce_lanes(acc);
}

inline float sum_fixed(const float* a, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i];
  return reduce_lanes(acc);
}

// y += alpha * x, one fused multiply-add per element.
inline void axpy_fixed(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(alpha, x[i], y[i]);
}

}  // namespace moetron::cpu
