// RMSNorm forward, one row per warp (core/kernels/warp.h): lane l sums x^2 over its columns,
// the butterfly gives every lane the row's sum, and each lane writes its columns. The host
// emulation runs the lanes of a warp one phase at a time.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"
#include "core/kernels/warp.h"

namespace moetron::kernels {

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

}  // namespace moetron::kernels
