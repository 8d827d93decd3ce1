// The op set. Layers express all their math through these; each op checks shapes and
// dispatches to the kernel of the tensors' device (core/cpu today; core/cuda beside it).
// Matrix ops view tensors as 2-D [rows(), cols()] (leading dims flattened).
// "Accumulate" outputs add into what is there (parameter gradients); others overwrite.
#pragma once

#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace moetron::ops {

// c = alpha * op(a) @ op(b) + beta * c, op = transpose when the flag is set.
void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
            float alpha = 1.0f, float beta = 0.0f);
// The same for `batch` independent problems: a, b, c are [batch, rows, cols].
void matmul_batched(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha = 1.0f, float beta = 0.0f);

// Elementwise (f32).
void fill(Tensor& x, float value);
void copy(const Tensor& src, Tensor& dst);
void add(const Tensor& a, const Tensor& b, Tensor& out);  // out = a + b
void axpy(float alpha, const Tensor& x, Tensor& y);       // y += alpha * x
void scale(Tensor& x, float s);                           // x *= s
double sum_squares(const Tensor& x);                      // in double, fixed order
bool all_finite(const Tensor& x);

// Columns: dst = [srcs[0] | srcs[1] | ...] along the last dim, and the inverse.
void concat_cols(std::span<const Tensor> srcs, Tensor& dst);
void split_cols(const Tensor& src, std::span<Tensor> dsts);

// RMSNorm over the last dim. rstd [rows] is saved for backward.
void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd);
// dx = (accumulate ? dx : 0) + d/dx; dweight accumulates.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight, bool accumulate_dx);

// RoPE, in place on x [batch, seq, heads, head_dim] with tables cos/sin [seq, head_dim / 2].
// inverse = rotate by the negative angle, which is the backward of the forward rotation.
enum class RopeStyle { rotate_half, interleaved };
void rope_tables(int64_t seq, int64_t head_dim, float theta, Tensor& cos, Tensor& sin);
void rope(Tensor& x, const Tensor& cos, const Tensor& sin, RopeStyle style, bool inverse);

// Causal attention, q [B, T, H, hd], k/v [B, T, KV, hd] (H % KV == 0; query head h reads kv
// head h / (H / KV)), out [B, T, H, hd], lse [B, H, T] (log-sum-exp saved for backward).
// Computed in query blocks: no T x T score matrix is ever held per head.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv);

// SwiGLU gate on the fused projection gate_up = [gate | up] ([rows, 2I]):
// out = silu(gate) * up ([rows, I]); backward writes dgate_up in the same fused layout.
void swiglu_forward(const Tensor& gate_up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);

// Embedding rows: out[i] = table[ids[i]]; backward accumulates into dtable.
void embedding_forward(std::span<const int32_t> ids, const Tensor& table, Tensor& out);
void embedding_backward(std::span<const int32_t> ids, const Tensor& dout, Tensor& dtable);

// Output head fused with cross-entropy: logits = h @ w^T, processed in row chunks so the
// [rows, vocab] logits never exist at once. Returns the sum over rows of CE(logits, target).
// With dh non-null, also dh = grad_scale * dCE/dh and dw += grad_scale * dCE/dw (grad_scale is
// the weight of the summed loss, e.g. 1/rows for a mean). workspace: any f32 tensor of at
// least ce_workspace_size(rows, vocab) elements.
int64_t ce_workspace_size(int64_t rows, int64_t vocab);
double head_cross_entropy(const Tensor& h, const Tensor& w, std::span<const int32_t> targets,
                          float grad_scale, Tensor* dh, Tensor* dw, Tensor& workspace);

// AdamW as torch.optim.AdamW: decoupled decay, bias-corrected moments; step counts from 1.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};
void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s);

}  // namespace moetron::ops
