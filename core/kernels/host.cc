#include "core/kernels/host.h"

#include "core/kernels/rmsnorm.h"

namespace moetron::kernels::host {

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * width; ++i) kernels::swiglu_forward(gate_up, out, width, i);
}

void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * width; ++i)
    kernels::swiglu_backward(dout, gate_up, dgate_up, width, i);
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) kernels::adamw(p, g, m, v, s, i);
}

void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float sums[kWarp];
    for (int lane = 0; lane < kWarp; ++lane) sums[lane] = rmsnorm_partial(x, cols, r, lane);
    host_butterfly(sums);
    const float rs = rmsnorm_rstd(sums[0], cols, eps);
    rstd[r] = rs;
    for (int lane = 0; lane < kWarp; ++lane) rmsnorm_write(x, w, rs, y, cols, r, lane);
  }
}

}  // namespace moetron::kernels::host
