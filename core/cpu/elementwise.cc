// Elementwise kernels: simple loops GCC vectorizes (-O3 -march=native), threaded with OpenMP
// over static chunks so results do not depend on scheduling.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/bf16.h"
#include "core/cpu/fast_math.h"
#include "core/cpu/kernels.h"
#include "core/kernels/reduce.h"

namespace moetron::cpu {
namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

void to_bf16(const float* src, uint16_t* dst, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = moetron::to_bf16(src[i]);
}

void from_bf16(const uint16_t* src, float* dst, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = moetron::from_bf16(src[i]);
}

void round_bf16(const float* src, float* dst, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = moetron::from_bf16(moetron::to_bf16(src[i]));
}

void fill(float* x, int64_t n, float value) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

void add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void scale(float* x, int64_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

double sum_squares(const float* x, int64_t n) {
  // The shared blocks (core/kernels/reduce.h): the CUDA kernel's sum, bit for bit.
  const int64_t blocks = kernels::sum_squares_blocks(n);
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) partial[b] = kernels::sum_squares_block(x, n, b);
  return kernels::sum_squares_total(partial.data(), blocks);
}

void copy_block(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows,
                int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMin && rows > 1)
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * ld_dst, src + r * ld_src, static_cast<size_t>(cols) * sizeof(float));
}

void concat_heads(const float* a, const float* b, float* dst, int64_t n, int64_t heads, int64_t da,
                  int64_t db, bool broadcast) {
  const int64_t dw = da + db;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      float* out = dst + (i * heads + h) * dw;
      std::copy_n(a + (i * heads + h) * da, da, out);
      std::copy_n(b + (broadcast ? i : i * heads + h) * db, db, out + da);
    }
}

void split_heads(const float* src, float* a, float* b, int64_t n, int64_t heads, int64_t da,
                 int64_t db, bool broadcast) {
  const int64_t dw = da + db;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (broadcast) std::fill_n(b + i * db, db, 0.0f);
    for (int64_t h = 0; h < heads; ++h) {
      const float* in = src + (i * heads + h) * dw;
      std::copy_n(in, da, a + (i * heads + h) * da);
      if (broadcast) {
        float* bi = b + i * db;  // heads summed in order: the same bits on any thread count
        for (int64_t c = 0; c < db; ++c) bi[c] += in[da + c];
      } else {
        std::copy_n(in + da, db, b + (i * heads + h) * db);
      }
    }
  }
}

void transpose01(const float* src, int64_t d0, int64_t d1, int64_t d2, float* dst) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < d0; ++i)
    for (int64_t j = 0; j < d1; ++j)
      std::copy_n(src + (i * d1 + j) * d2, d2, dst + (j * d0 + i) * d2);
}

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width) {
#pragma omp parallel for schedule(static) if (rows * width > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * width;
    const float* u = g + width;
    float* o = out + r * width;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) o[i] = g[i] * fast_sigmoid(g[i]) * u[i];
  }
}

void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width) {
#pragma omp parallel for schedule(static) if (rows * width > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * width;
    const float* u = g + width;
    const float* d = dout + r * width;
    float* dg = dgate_up + r * 2 * width;
    float* du = dg + width;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) {
      const float s = fast_sigmoid(g[i]);
      du[i] = d[i] * g[i] * s;
      dg[i] = d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
  }
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, int64_t step) {
  // torch.optim.AdamW (non-fused): decay, then the bias-corrected Adam step.
  // Scalars in double, then rounded once, as PyTorch does with its Python-float scalars.
  const double t = static_cast<double>(step);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(double{beta1}, t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(double{beta2}, t)));
  const float decay = static_cast<float>(1.0 - double{lr} * weight_decay);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    m[i] = m[i] + (1.0f - beta1) * (gi - m[i]);
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * m[i] / denom;
  }
}

}  // namespace moetron::cpu
