// RMSNorm: y = x * rsqrt(mean(x^2) + eps) * w.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu/kernels.h"
#include "core/kernels/rmsnorm.h"

namespace moetron::cpu {
namespace {
// Rows per partial weight-gradient sum: a fixed split, so dw depends on neither the thread count
// nor the device (the CUDA kernel's split, core/kernels/rmsnorm.h).
constexpr int64_t kRowsPerPartial = kernels::kRmsnormRowsPerPart;
}  // namespace

void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(cols) + eps);
    rstd[r] = rs;
    float* yr = y + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rs * w[c];
  }
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols) {
  const int64_t parts = (rows + kRowsPerPartial - 1) / kRowsPerPartial;
  std::vector<float> partial(static_cast<size_t>(parts * cols), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < parts; ++p) {
    float* dwp = partial.data() + p * cols;
    const int64_t end = std::min(rows, (p + 1) * kRowsPerPartial);
    for (int64_t r = p * kRowsPerPartial; r < end; ++r) {
      const float* xr = x + r * cols;
      const float* dyr = dy + r * cols;
      float* dxr = dx + r * cols;
      const float rs = rstd[r];
      // dx = rs * (w*dy) - x * rs^3 * mean(w*dy*x)
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < cols; ++c) dot += w[c] * dyr[c] * xr[c];
      const float k = rs * rs * rs * dot / static_cast<float>(cols);
      // Overwriting must not read dx: it may hold anything, NaN included.
      if (accumulate_dx) {  // NOLINT(bugprone-branch-clone): += here, = below
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) dxr[c] += rs * w[c] * dyr[c] - xr[c] * k;
      } else {
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) dxr[c] = rs * w[c] * dyr[c] - xr[c] * k;
      }
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) dwp[c] += dyr[c] * xr[c] * rs;
    }
  }
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t c = 0; c < cols; ++c) dw[c] += partial[p * cols + c];
}

}  // namespace moetron::cpu
