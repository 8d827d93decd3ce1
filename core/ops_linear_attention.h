// Linear attention's ops: the gated delta rule of Gated DeltaNet (arXiv 2412.06464) in its
// chunked training form and its recurrent decoding form, and the layer's small pieces (the
// causal depthwise conv with SiLU, the L2 norm, the decay and write gates, the gated RMSNorm).
// Kernels in core/cpu/gated_delta.cc and core/cpu/linear_attention.cc; models/gated_deltanet.h
// is the layer. All f32.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace moetron::ops {

// The chunk length of the training form (fla's and Hugging Face's).
inline constexpr int64_t kGatedDeltaChunk = 64;

// Per value head h (reading key head h / (Hv / Hk)), from a zero state S [dk, dv]:
//   S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  out_t = S^T q_t.
// q, k [B, T, Hk, dk] (q already scaled), v [B, T, Hv, dv], g, beta [B, T, Hv], out [B, T, Hv,
// dv]; states [B, Hv, chunks + 1, dk, dv] (chunks = ceil(T / kGatedDeltaChunk)): the state at
// each chunk's start, then the final state. Computed in chunks of kGatedDeltaChunk positions.
void gated_delta_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                         const Tensor& beta, Tensor& out, Tensor& states);
// The gradients of out (dout) with respect to every input (all overwritten), from the forward's
// inputs and states (the final state has no gradient).
void gated_delta_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& g, const Tensor& beta, const Tensor& states, Tensor& dq,
                          Tensor& dk, Tensor& dv, Tensor& dg, Tensor& dbeta);
// The recurrent form for decoding: n positions of one sequence in order, q, k [n, Hk, dk], v
// [n, Hv, dv], g, beta [n, Hv], out [n, Hv, dv]; state [Hv, dk, dv] carried in place.
void gated_delta_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, Tensor& state, Tensor& out);

// Causal depthwise conv + SiLU over x [B, T, C] with w [C, K]: pre[t, c] = sum_j w[c, j] x[t -
// (K - 1) + j, c] (zero before each sequence's start), y = silu(pre). pre is saved for backward.
void conv_silu_forward(const Tensor& x, const Tensor& w, Tensor& pre, Tensor& y);
// dx overwritten, dw accumulates.
void conv_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& pre,
                        Tensor& dx, Tensor& dw);
// Decoding: x, y [n, C] in order; state [K - 1, C] holds the previous inputs, oldest first.
void conv_silu_step(const Tensor& x, const Tensor& w, Tensor& state, Tensor& y);

// y = scale * x / sqrt(sum(x^2) + eps) over the last dim; rnorm [rows] saved for backward.
void l2norm_forward(const Tensor& x, float eps, float scale, Tensor& y, Tensor& rnorm);
void l2norm_backward(const Tensor& dy, const Tensor& x, const Tensor& rnorm, float scale,
                     Tensor& dx);

// The gates of [rows, H] projections a and b: g = -exp(a_log) softplus(a + dt_bias) (the log of
// the decay) and beta = sigmoid(b); a_log, dt_bias [H].
void gdn_gates_forward(const Tensor& a, const Tensor& b, const Tensor& a_log, const Tensor& dt_bias,
                       Tensor& g, Tensor& beta);
// da, db overwritten; da_log, ddt_bias accumulate.
void gdn_gates_backward(const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& a_log,
                        const Tensor& dt_bias, const Tensor& beta, Tensor& da, Tensor& db,
                        Tensor& da_log, Tensor& ddt_bias);

// y = rmsnorm(x) * w * silu(z) over the last dim (the norm first, then the gate); rstd [rows].
void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, float eps, Tensor& y,
                           Tensor& rstd);
// dx, dz overwritten; dw accumulates.
void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, Tensor& dx, Tensor& dz, Tensor& dw);

}  // namespace moetron::ops
