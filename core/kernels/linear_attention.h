// The Gated DeltaNet layer's small ops (core/ops_linear_attention.h), an element, a row, a
// channel or a head per thread: the causal depthwise conv with SiLU, the L2 norm, the decay and
// write gates and the gated RMSNorm. Sums that the CPU splits into partial blocks run here over
// the whole extent in order, so they agree with the CPU's to rounding, not bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

MT_HD float gdn_sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}
// torch.nn.functional.softplus with its default threshold: x itself above 20.
MT_HD float gdn_softplus(float x) {
  return x > 20.0f ? x : log1pf(expf(x));
}

// x, pre, y [batch, seq, channels], w [channels, kernel]; tap j of output t reads position
// t - (kernel - 1) + j (the last tap the current one).
struct ConvDims {
  int64_t batch, seq, channels, kernel;
};
MT_HD float conv_pre_at(const ConvDims& s, const float* x, const float* w, int64_t b, int64_t t,
                        int64_t c) {
  float p = 0.0f;
  for (int64_t j = s.kernel - 1 - t > 0 ? s.kernel - 1 - t : 0; j < s.kernel; ++j)
    p = fmaf(w[c * s.kernel + j], x[(b * s.seq + t - (s.kernel - 1) + j) * s.channels + c], p);
  return p;
}
MT_HD void conv_silu_forward_at(const ConvDims& s, const float* x, const float* w, float* pre,
                                float* y, int64_t i) {
  const int64_t c = i % s.channels, t = i / s.channels % s.seq, b = i / (s.channels * s.seq);
  const float p = conv_pre_at(s, x, w, b, t, c);
  pre[i] = p;
  y[i] = p * gdn_sigmoid(p);
}
// dpre = dy silu'(pre), silu'(p) = s (1 + p (1 - s)).
MT_HD float conv_dpre(const float* dy, const float* pre, int64_t i) {
  const float p = pre[i], s = gdn_sigmoid(p);
  return dy[i] * s * (1.0f + p * (1.0f - s));
}
// dx of element i (overwritten): x[t] fed tap j of output t + (kernel - 1) - j.
MT_HD void conv_silu_dx_at(const ConvDims& s, const float* dy, const float* w, const float* pre,
                           float* dx, int64_t i) {
  const int64_t c = i % s.channels, t = i / s.channels % s.seq, b = i / (s.channels * s.seq);
  float acc = 0.0f;
  for (int64_t j = 0; j < s.kernel; ++j) {
    const int64_t to = t + (s.kernel - 1) - j;
    if (to < s.seq)
      acc = fmaf(w[c * s.kernel + j], conv_dpre(dy, pre, (b * s.seq + to) * s.channels + c), acc);
  }
  dx[i] = acc;
}
// dw[c, j] += the sum over (b, t) of dpre x, item c * kernel + j.
MT_HD void conv_silu_dw_at(const ConvDims& s, const float* dy, const float* x, const float* pre,
                           float* dw, int64_t item) {
  const int64_t c = item / s.kernel, j = item % s.kernel;
  float acc = 0.0f;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = s.kernel - 1 - j; t < s.seq; ++t) {
      const int64_t i = (b * s.seq + t) * s.channels + c;
      acc = fmaf(conv_dpre(dy, pre, i), x[(b * s.seq + t - (s.kernel - 1) + j) * s.channels + c],
                 acc);
    }
  dw[item] += acc;
}
// n tokens in order for channel c; state [kernel - 1, channels] the previous inputs, oldest first.
MT_HD void conv_silu_step_at(const float* x, const float* w, float* state, float* y, int64_t n,
                             int64_t channels, int64_t kernel, int64_t c) {
  for (int64_t t = 0; t < n; ++t) {
    const float xt = x[t * channels + c];
    float p = w[c * kernel + kernel - 1] * xt;
    for (int64_t j = 0; j + 1 < kernel; ++j)
      p = fmaf(w[c * kernel + j], state[j * channels + c], p);
    y[t * channels + c] = p * gdn_sigmoid(p);
    if (kernel > 1) {  // the window moves one position: the oldest input leaves, x[t] enters
      for (int64_t j = 0; j + 2 < kernel; ++j)
        state[j * channels + c] = state[(j + 1) * channels + c];
      state[(kernel - 2) * channels + c] = xt;
    }
  }
}

// Row r of x [rows, cols]: y = x scale / sqrt(x.x + eps), rnorm [rows] saved.
MT_HD void l2norm_forward_row(const float* x, float eps, float scale, float* y, float* rnorm,
                              int64_t cols, int64_t r) {
  const float* xr = x + r * cols;
  float ss = 0.0f;
  for (int64_t c = 0; c < cols; ++c) ss = fmaf(xr[c], xr[c], ss);
  const float rn = 1.0f / sqrtf(ss + eps);
  rnorm[r] = rn;
  for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = xr[c] * rn * scale;
}
// dx = scale rn (dy - rn^2 (x . dy) x).
MT_HD void l2norm_backward_row(const float* dy, const float* x, const float* rnorm, float scale,
                               float* dx, int64_t cols, int64_t r) {
  const float* xr = x + r * cols;
  const float* dyr = dy + r * cols;
  const float rn = rnorm[r];
  float d = 0.0f;
  for (int64_t c = 0; c < cols; ++c) d = fmaf(xr[c], dyr[c], d);
  const float k = rn * rn * d;
  for (int64_t c = 0; c < cols; ++c) dx[r * cols + c] = scale * rn * (dyr[c] - k * xr[c]);
}

// Element i of [rows, heads]: g = -exp(a_log) softplus(a + dt_bias), beta = sigmoid(b).
MT_HD void gdn_gates_forward_at(const float* a, const float* b, const float* a_log,
                                const float* dt_bias, float* g, float* beta, int64_t heads,
                                int64_t i) {
  const int64_t h = i % heads;
  g[i] = -expf(a_log[h]) * gdn_softplus(a[i] + dt_bias[h]);
  beta[i] = gdn_sigmoid(b[i]);
}
MT_HD void gdn_gates_backward_at(const float* dg, const float* dbeta, const float* a,
                                 const float* a_log, const float* dt_bias, const float* beta,
                                 float* da, float* db, int64_t heads, int64_t i) {
  const int64_t h = i % heads;
  const float xa = a[i] + dt_bias[h];
  // d softplus / dx = sigmoid(x) (1 above the threshold, where softplus is x).
  da[i] = -expf(a_log[h]) * (xa > 20.0f ? 1.0f : gdn_sigmoid(xa)) * dg[i];
  db[i] = dbeta[i] * beta[i] * (1.0f - beta[i]);
}
// Head h's parameter gradients, over the rows in order (after gdn_gates_backward_at's da).
MT_HD void gdn_gates_head_grads(const float* dg, const float* a, const float* a_log,
                                const float* dt_bias, const float* da, float* da_log,
                                float* ddt_bias, int64_t rows, int64_t heads, int64_t h) {
  float s_log = 0.0f, s_dt = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r * heads + h;
    s_log += dg[i] * -expf(a_log[h]) * gdn_softplus(a[i] + dt_bias[h]);  // dg/dA_log = g
    s_dt += da[i];
  }
  da_log[h] += s_log;
  ddt_bias[h] += s_dt;
}

// Row r: y = x rstd w silu(z), rstd [rows] saved.
MT_HD void gated_rmsnorm_forward_row(const float* x, const float* z, const float* w, float eps,
                                     float* y, float* rstd, int64_t cols, int64_t r) {
  const float* xr = x + r * cols;
  const float* zr = z + r * cols;
  float ss = 0.0f;
  for (int64_t c = 0; c < cols; ++c) ss = fmaf(xr[c], xr[c], ss);
  const float rs = 1.0f / sqrtf(ss / static_cast<float>(cols) + eps);
  rstd[r] = rs;
  for (int64_t c = 0; c < cols; ++c)
    y[r * cols + c] = xr[c] * rs * w[c] * (zr[c] * gdn_sigmoid(zr[c]));
}
// dx and dz of row r (overwritten): y = h silu(z), h = x rs w, so dz = dy h silu'(z) and
// dh = dy silu(z), then RMSNorm's backward of dh.
MT_HD void gated_rmsnorm_backward_row(const float* dy, const float* x, const float* z,
                                      const float* w, const float* rstd, float* dx, float* dz,
                                      int64_t cols, int64_t r) {
  const float* xr = x + r * cols;
  const float* zr = z + r * cols;
  const float* dyr = dy + r * cols;
  const float rs = rstd[r];
  float dot = 0.0f;
  for (int64_t c = 0; c < cols; ++c) {
    const float s = gdn_sigmoid(zr[c]);
    dz[r * cols + c] = dyr[c] * (xr[c] * rs * w[c]) * s * (1.0f + zr[c] * (1.0f - s));
    dot = fmaf(w[c] * (dyr[c] * zr[c] * s), xr[c], dot);
  }
  const float k = rs * rs * rs * dot / static_cast<float>(cols);
  for (int64_t c = 0; c < cols; ++c)
    dx[r * cols + c] = rs * w[c] * (dyr[c] * zr[c] * gdn_sigmoid(zr[c])) - xr[c] * k;
}
// dw[c] += the sum over the rows in order of dh x rs.
MT_HD void gated_rmsnorm_dw_at(const float* dy, const float* x, const float* z, const float* rstd,
                               float* dw, int64_t rows, int64_t cols, int64_t c) {
  float acc = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r * cols + c;
    acc = fmaf(dy[i] * z[i] * gdn_sigmoid(z[i]), x[i] * rstd[r], acc);
  }
  dw[c] += acc;
}

}  // namespace moetron::kernels
