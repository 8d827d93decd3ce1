// RMSNorm, one row per warp (core/kernels/warp.h): in the forward, lane l sums x^2 over its
// columns, the butterfly gives every lane the row's sum, and each lane writes its columns; the
// backward's dx likewise with the sum of w dy x. The weight gradient sums over rows in fixed
// parts of kRmsnormRowsPerPart rows, then the parts in order (the CPU backend's split too), so
// it depends on neither the thread count nor the device. The host emulation runs the lanes of a
// warp one phase at a time.
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

// Backward, phase 1 of lane `lane` of row r: its part of sum_c w dy x.
MT_HD float rmsnorm_backward_partial(const float* dy, const float* x, const float* w, int64_t cols,
                                     int64_t r, int lane) {
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += kWarp)
    s = fmaf(w[c] * dy[r * cols + c], x[r * cols + c], s);
  return s;
}

// Phase 2, from the row's sum: dx = rs w dy - x rs^3 mean(w dy x), overwritten or added.
MT_HD void rmsnorm_backward_dx(const float* dy, const float* x, const float* w, float rs, float sum,
                               float* dx, bool accumulate, int64_t cols, int64_t r, int lane) {
  const float k = rs * rs * rs * sum / static_cast<float>(cols);
  for (int64_t c = lane; c < cols; c += kWarp) {
    const int64_t i = r * cols + c;
    const float v = fmaf(rs * w[c], dy[i], -(x[i] * k));
    dx[i] = accumulate ? dx[i] + v : v;  // overwriting reads nothing: dx may hold NaN
  }
}

// Rows per part of the weight gradient's sum.
inline constexpr int64_t kRmsnormRowsPerPart = 64;

MT_HD int64_t rmsnorm_parts(int64_t rows) {
  return (rows + kRmsnormRowsPerPart - 1) / kRmsnormRowsPerPart;
}

// part[p * cols + c] = sum over the rows of part p, in order, of dy x rs (element i = p * cols +
// c).
MT_HD void rmsnorm_dw_part_at(const float* dy, const float* x, const float* rstd, int64_t rows,
                              int64_t cols, float* part, int64_t i) {
  const int64_t p = i / cols, c = i % cols;
  const int64_t end = p * kRmsnormRowsPerPart + kRmsnormRowsPerPart < rows
                          ? p * kRmsnormRowsPerPart + kRmsnormRowsPerPart
                          : rows;
  float s = 0.0f;
  for (int64_t r = p * kRmsnormRowsPerPart; r < end; ++r)
    s = fmaf(dy[r * cols + c] * x[r * cols + c], rstd[r], s);
  part[i] = s;
}

// dw[c] += the parts in order.
MT_HD void rmsnorm_dw_sum_at(const float* part, int64_t parts, int64_t cols, float* dw, int64_t c) {
  float s = dw[c];
  for (int64_t p = 0; p < parts; ++p) s += part[p * cols + c];
  dw[c] = s;
}

}  // namespace moetron::kernels
