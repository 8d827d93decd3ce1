// The Gated DeltaNet layer's small kernels: the causal depthwise conv with SiLU, the L2 norm of
// q and k, the decay and write gates, the gated RMSNorm, and the sigmoid gate.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu/fast_math.h"
#include "core/cpu/kernels_linear_attention.h"

namespace moetron::cpu {
namespace {

// Channels per weight-gradient task: a fixed split, so dw does not depend on the thread count.
constexpr int64_t kChannelBlock = 64;
// Rows per partial weight-gradient sum (as RMSNorm's).
constexpr int64_t kRowsPerPartial = 64;

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

// torch.nn.functional.softplus with its default threshold: x itself above 20.
float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

}  // namespace

void conv_silu_forward(const float* x, const float* w, float* pre, float* y, int64_t batch,
                       int64_t seq, int64_t channels, int64_t kernel) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      float* p = pre + (b * seq + t) * channels;
      std::fill(p, p + channels, 0.0f);
      // Tap j reads position t - (kernel - 1) + j; the last tap is the current position.
      for (int64_t j = std::max<int64_t>(0, kernel - 1 - t); j < kernel; ++j) {
        const float* xs = x + (b * seq + t - (kernel - 1) + j) * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) p[c] += w[c * kernel + j] * xs[c];
      }
      float* yr = y + (b * seq + t) * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) yr[c] = p[c] * fast_sigmoid(p[c]);
    }
}

void conv_silu_backward(const float* dy, const float* x, const float* w, const float* pre,
                        float* dx, float* dw, int64_t batch, int64_t seq, int64_t channels,
                        int64_t kernel) {
  // dpre = dy * silu'(pre), silu'(p) = s (1 + p (1 - s)).
  std::vector<float> dpre(static_cast<size_t>(batch * seq * channels));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch * seq * channels; ++i) {
    const float p = pre[i], s = sigmoid(p);
    dpre[static_cast<size_t>(i)] = dy[i] * s * (1.0f + p * (1.0f - s));
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      float* dxr = dx + (b * seq + t) * channels;
      std::fill(dxr, dxr + channels, 0.0f);
      // x[t] fed tap j of output t + (kernel - 1) - j.
      for (int64_t j = 0; j < kernel; ++j) {
        const int64_t to = t + (kernel - 1) - j;
        if (to >= seq) continue;
        const float* d = dpre.data() + (b * seq + to) * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) dxr[c] += w[c * kernel + j] * d[c];
      }
    }
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < blocks; ++cb) {
    const int64_t c0 = cb * kChannelBlock, c1 = std::min(channels, c0 + kChannelBlock);
    std::vector<float> acc(static_cast<size_t>((c1 - c0) * kernel), 0.0f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t < seq; ++t) {
        const float* d = dpre.data() + (b * seq + t) * channels;
        for (int64_t j = std::max<int64_t>(0, kernel - 1 - t); j < kernel; ++j) {
          const float* xs = x + (b * seq + t - (kernel - 1) + j) * channels;
          for (int64_t c = c0; c < c1; ++c)
            acc[static_cast<size_t>((c - c0) * kernel + j)] += d[c] * xs[c];
        }
      }
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t j = 0; j < kernel; ++j)
        dw[c * kernel + j] += acc[static_cast<size_t>((c - c0) * kernel + j)];
  }
}

void conv_silu_step(const float* x, const float* w, float* state, float* y, int64_t n,
                    int64_t channels, int64_t kernel) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * channels;
    float* yt = y + t * channels;
    for (int64_t c = 0; c < channels; ++c) {
      float p = w[c * kernel + kernel - 1] * xt[c];
      for (int64_t j = 0; j + 1 < kernel; ++j) p += w[c * kernel + j] * state[j * channels + c];
      yt[c] = p * fast_sigmoid(p);
    }
    // Shift the window by one position: the oldest input leaves, x[t] enters.
    if (kernel > 1) {
      std::copy(state + channels, state + (kernel - 1) * channels, state);
      std::copy(xt, xt + channels, state + (kernel - 2) * channels);
    }
  }
}

void l2norm_forward(const float* x, float eps, float scale, float* y, float* rnorm, int64_t rows,
                    int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
    const float rn = 1.0f / std::sqrt(ss + eps);
    rnorm[r] = rn;
    float* yr = y + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rn * scale;
  }
}

void l2norm_backward(const float* dy, const float* x, const float* rnorm, float scale, float* dx,
                     int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    const float rn = rnorm[r];
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (int64_t c = 0; c < cols; ++c) d += xr[c] * dyr[c];
    // dx = scale * rn * (dy - rn^2 (x . dy) x)
    const float k = rn * rn * d;
    float* dxr = dx + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) dxr[c] = scale * rn * (dyr[c] - k * xr[c]);
  }
}

void gdn_gates_forward(const float* a, const float* b, const float* a_log, const float* dt_bias,
                       float* g, float* beta, int64_t rows, int64_t heads) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = r * heads + h;
      g[i] = -std::exp(a_log[h]) * softplus(a[i] + dt_bias[h]);
      beta[i] = sigmoid(b[i]);
    }
}

void gdn_gates_backward(const float* dg, const float* dbeta, const float* a, const float* a_log,
                        const float* dt_bias, const float* beta, float* da, float* db,
                        float* da_log, float* ddt_bias, int64_t rows, int64_t heads) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = r * heads + h;
      const float xa = a[i] + dt_bias[h];
      // d softplus / dx = sigmoid(x) (1 above the threshold, where softplus is x).
      da[i] = -std::exp(a_log[h]) * (xa > 20.0f ? 1.0f : sigmoid(xa)) * dg[i];
      db[i] = dbeta[i] * beta[i] * (1.0f - beta[i]);
    }
  // The per-head sums in row order: fixed, whatever the thread count.
  for (int64_t h = 0; h < heads; ++h) {
    float s_log = 0.0f, s_dt = 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * heads + h;
      s_log += dg[i] * -std::exp(a_log[h]) * softplus(a[i] + dt_bias[h]);  // dg/dA_log = g
      s_dt += da[i];
    }
    da_log[h] += s_log;
    ddt_bias[h] += s_dt;
  }
}

void gated_rmsnorm_forward(const float* x, const float* z, const float* w, float eps, float* y,
                           float* rstd, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* zr = z + r * cols;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(cols) + eps);
    rstd[r] = rs;
    float* yr = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rs * w[c] * (zr[c] * sigmoid(zr[c]));
  }
}

void gated_rmsnorm_backward(const float* dy, const float* x, const float* z, const float* w,
                            const float* rstd, float* dx, float* dz, float* dw, int64_t rows,
                            int64_t cols) {
  const int64_t parts = (rows + kRowsPerPartial - 1) / kRowsPerPartial;
  std::vector<float> partial(static_cast<size_t>(parts * cols), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < parts; ++p) {
    float* dwp = partial.data() + p * cols;
    std::vector<float> dh(static_cast<size_t>(cols));
    const int64_t end = std::min(rows, (p + 1) * kRowsPerPartial);
    for (int64_t r = p * kRowsPerPartial; r < end; ++r) {
      const float* xr = x + r * cols;
      const float* zr = z + r * cols;
      const float* dyr = dy + r * cols;
      const float rs = rstd[r];
      // y = h * silu(z), h = x * rs * w: dz = dy h silu'(z), dh = dy silu(z), then RMSNorm's.
      float dot = 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float s = sigmoid(zr[c]), h = xr[c] * rs * w[c];
        dz[r * cols + c] = dyr[c] * h * s * (1.0f + zr[c] * (1.0f - s));
        dh[static_cast<size_t>(c)] = dyr[c] * zr[c] * s;
        dot += w[c] * dh[static_cast<size_t>(c)] * xr[c];
        dwp[c] += dh[static_cast<size_t>(c)] * xr[c] * rs;
      }
      const float k = rs * rs * rs * dot / static_cast<float>(cols);
      for (int64_t c = 0; c < cols; ++c)
        dx[r * cols + c] = rs * w[c] * dh[static_cast<size_t>(c)] - xr[c] * k;
    }
  }
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t c = 0; c < cols; ++c) dw[c] += partial[static_cast<size_t>(p * cols + c)];
}

void sigmoid_gate_forward(const float* x, const float* gate, float* y, int64_t rows, int64_t cols,
                          int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      y[r * cols + c] = x[r * cols + c] * sigmoid(gate[r * width + (width == 1 ? 0 : c)]);
}

void sigmoid_gate_backward(const float* dy, const float* x, const float* gate, float* dx,
                           float* dgate, int64_t rows, int64_t cols, int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float row_sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float s = sigmoid(gate[r * width + (width == 1 ? 0 : c)]);
      dx[i] = dy[i] * s;
      const float dg = dy[i] * x[i] * s * (1.0f - s);
      if (width == 1)
        row_sum += dg;
      else
        dgate[i] = dg;
    }
    if (width == 1) dgate[r] = row_sum;
  }
}

}  // namespace moetron::cpu
