// CPU kernels behind core/ops_linear_attention.h: raw row-major fp32 memory, shapes checked.
#pragma once

#include <cstdint>

namespace moetron::cpu {

// The gated delta rule's sizes: q, k [batch, seq, k_heads, dk]; v, out [batch, seq, v_heads,
// dv]; g, beta [batch, seq, v_heads]; states [batch, v_heads, chunks + 1, dk, dv].
struct GatedDeltaShape {
  int64_t batch, seq, k_heads, v_heads, dk, dv, chunk;
  int64_t chunks() const { return (seq + chunk - 1) / chunk; }
};
void gated_delta_forward(const GatedDeltaShape& s, const float* q, const float* k, const float* v,
                         const float* g, const float* beta, float* out, float* states);
void gated_delta_backward(const GatedDeltaShape& s, const float* dout, const float* q,
                          const float* k, const float* v, const float* g, const float* beta,
                          const float* states, float* dq, float* dk, float* dv, float* dg,
                          float* dbeta);
// n tokens of one sequence in order (batch 1, seq n); state [v_heads, dk, dv] in place.
void gated_delta_step(const GatedDeltaShape& s, const float* q, const float* k, const float* v,
                      const float* g, const float* beta, float* state, float* out);

// Causal depthwise conv + SiLU over x [batch, seq, channels], w [channels, kernel].
void conv_silu_forward(const float* x, const float* w, float* pre, float* y, int64_t batch,
                       int64_t seq, int64_t channels, int64_t kernel);
void conv_silu_backward(const float* dy, const float* x, const float* w, const float* pre,
                        float* dx, float* dw, int64_t batch, int64_t seq, int64_t channels,
                        int64_t kernel);
// n tokens in order; state [kernel - 1, channels] holds the previous inputs, oldest first.
void conv_silu_step(const float* x, const float* w, float* state, float* y, int64_t n,
                    int64_t channels, int64_t kernel);

void l2norm_forward(const float* x, float eps, float scale, float* y, float* rnorm, int64_t rows,
                    int64_t cols);
void l2norm_backward(const float* dy, const float* x, const float* rnorm, float scale, float* dx,
                     int64_t rows, int64_t cols);

void gdn_gates_forward(const float* a, const float* b, const float* a_log, const float* dt_bias,
                       float* g, float* beta, int64_t rows, int64_t heads);
void gdn_gates_backward(const float* dg, const float* dbeta, const float* a, const float* a_log,
                        const float* dt_bias, const float* beta, float* da, float* db,
                        float* da_log, float* ddt_bias, int64_t rows, int64_t heads);

void gated_rmsnorm_forward(const float* x, const float* z, const float* w, float eps, float* y,
                           float* rstd, int64_t rows, int64_t cols);
void gated_rmsnorm_backward(const float* dy, const float* x, const float* z, const float* w,
                            const float* rstd, float* dx, float* dz, float* dw, int64_t rows,
                            int64_t cols);

// y = x * sigmoid(gate), gate of x's shape (width == cols) or one per row (width == 1).
void sigmoid_gate_forward(const float* x, const float* gate, float* y, int64_t rows, int64_t cols,
                          int64_t width);
void sigmoid_gate_backward(const float* dy, const float* x, const float* gate, float* dx,
                           float* dgate, int64_t rows, int64_t cols, int64_t width);

}  // namespace moetron::cpu
