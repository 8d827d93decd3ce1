// Per-element math of the elementwise kernels (SwiGLU, the sigmoid gates, AdamW), host and
// device alike.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

MT_HD float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

// out = silu(g) * u for element i of a row of width w: gate_up holds [g | u] per row.
MT_HD void swiglu_forward(const float* gate_up, float* out, int64_t width, int64_t i) {
  const int64_t r = i / width, c = i % width;
  const float g = gate_up[r * 2 * width + c], u = gate_up[r * 2 * width + width + c];
  out[i] = g * sigmoid(g) * u;
}

MT_HD void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t width,
                           int64_t i) {
  const int64_t r = i / width, c = i % width;
  const float g = gate_up[r * 2 * width + c], u = gate_up[r * 2 * width + width + c];
  const float s = sigmoid(g), d = dout[i];
  dgate_up[r * 2 * width + width + c] = d * g * s;
  dgate_up[r * 2 * width + c] = d * u * s * fmaf(g, 1.0f - s, 1.0f);
}

// y = x * sigmoid(gate), gate [rows, width] with width cols (per element) or 1 (per row: Qwen's
// shared-expert gate, gated attention's per-head gate): element i of y [rows, cols].
MT_HD void sigmoid_gate_at(const float* x, const float* gate, float* y, int64_t cols, int64_t width,
                           int64_t i) {
  const int64_t r = i / cols, c = i % cols;
  y[i] = x[i] * sigmoid(gate[r * width + (width == 1 ? 0 : c)]);
}
// The backward of element i: dx, and dgate when the gate is per element.
MT_HD void sigmoid_gate_backward_at(const float* dy, const float* x, const float* gate, float* dx,
                                    float* dgate, int64_t cols, int64_t width, int64_t i) {
  const int64_t r = i / cols, c = i % cols;
  const float s = sigmoid(gate[r * width + (width == 1 ? 0 : c)]);
  dx[i] = dy[i] * s;
  if (width != 1) dgate[i] = dy[i] * x[i] * s * (1.0f - s);
}
// A per-row gate's gradient: the row's dg summed in column order (row r).
MT_HD void sigmoid_gate_row_grad(const float* dy, const float* x, const float* gate, float* dgate,
                                 int64_t cols, int64_t r) {
  const float s = sigmoid(gate[r]);
  float sum = 0.0f;
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t i = r * cols + c;
    sum = fmaf(dy[i] * x[i] * s, 1.0f - s, sum);
  }
  dgate[r] = sum;
}

// torch.optim.AdamW's step (decay, then the bias-corrected update), its per-step scalars
// computed once on the host in double and rounded, as PyTorch does with Python floats.
struct AdamWScalars {
  float beta1, beta2, eps, step_size, bc2_sqrt, decay;
};
inline AdamWScalars adamw_scalars(double lr, float beta1, float beta2, float eps,
                                  float weight_decay, int64_t step) {
  const double t = static_cast<double>(step);
  return {beta1,
          beta2,
          eps,
          static_cast<float>(lr / (1.0 - std::pow(double{beta1}, t))),
          static_cast<float>(std::sqrt(1.0 - std::pow(double{beta2}, t))),
          static_cast<float>(1.0 - lr * weight_decay)};
}

MT_HD void adamw(float* p, const float* g, float* m, float* v, const AdamWScalars& s, int64_t i) {
  const float gi = g[i];
  const float mi = fmaf(1.0f - s.beta1, gi - m[i], m[i]);
  const float vi = fmaf(1.0f - s.beta2, gi * gi, s.beta2 * v[i]);
  m[i] = mi;
  v[i] = vi;
  const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
  p[i] = fmaf(p[i], s.decay, -(s.step_size * mi / denom));
}

}  // namespace moetron::kernels
