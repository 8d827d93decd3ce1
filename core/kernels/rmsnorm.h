// RMSNorm forward, one row per warp of 32 lanes: lane l sums x^2 over the columns l, l + 32,
// ...; a butterfly over the lanes (xor 16, 8, 4, 2, 1) gives every lane the row's sum, the same
// bits on the host as on the device (a + b == b + a, and the order is the butterfly's); each
// lane then writes its columns. The host emulation runs the lanes of a warp one phase at a time.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

inline constexpr int kWarp = 32;

// Phase 1 of lane `lane` of row `r`.
MT_HD float rmsnorm_partial(const float* x, int64_t cols, int64_t r, int lane) {
  const float* xr = x + r * cols;
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += kWarp) s = fmaf(xr[c], xr[c], s);
  return s;
}

// Phase 2 (after the butterfly): rstd from the row's sum, and lane `lane`'s outputs.
MT_HD float rmsnorm_rstd(float sum, int64_t cols, float eps) {
  return 1.0f / sqrtf(sum / static_cast<float>(cols) + eps);
}
MT_HD void rmsnorm_write(const float* x, const float* w, float rs, float* y, int64_t cols,
                         int64_t r, int lane) {
  for (int64_t c = lane; c < cols; c += kWarp) y[r * cols + c] = x[r * cols + c] * rs * w[c];
}

// The butterfly on the host: v[l] = v[l] + v[l ^ o] for o = 16 .. 1, all lanes at once.
inline void host_butterfly(float (&v)[kWarp]) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    float next[kWarp];
    for (int l = 0; l < kWarp; ++l) next[l] = v[l] + v[l ^ o];
    for (int l = 0; l < kWarp; ++l) v[l] = next[l];
  }
}

}  // namespace moetron::kernels
