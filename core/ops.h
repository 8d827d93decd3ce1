// The op set. Layers express all their math through these; each op checks shapes, dtypes and
// devices (every tensor of a call on one device), then calls that device's backend
// (core/backend.h: the CPU's is core/cpu/). Every argument is a Tensor, index arguments
// included (i32 ids, targets, expert indices and permutations; i64 counts and offsets).
// Matrix ops view tensors as 2-D [rows(), cols()] (leading dims flattened).
// "Accumulate" outputs add into what is there (parameter gradients); others overwrite.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace moetron::ops {

// c = alpha * op(a) @ op(b) + beta * c, op = transpose when the flag is set. a and b are both
// f32, or both bf16 (products accumulated in fp32); c is f32.
void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
            float alpha = 1.0f, float beta = 0.0f);
// The same for `batch` independent problems: a, b, c are [batch, rows, cols].
void matmul_batched(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha = 1.0f, float beta = 0.0f);

// Elementwise (f32).
void fill(Tensor& x, float value);
// dst = src in dst's dtype, f32 -> bf16 (round to nearest, ties to even) or bf16 -> f32 (exact);
// the same number of elements.
void cast(const Tensor& src, Tensor& dst);
void copy(const Tensor& src, Tensor& dst);
void add(const Tensor& a, const Tensor& b, Tensor& out);  // out = a + b
void axpy(float alpha, const Tensor& x, Tensor& y);       // y += alpha * x
void scale(Tensor& x, float s);                           // x *= s
// Reductions land in device scalars (f64 tensors on x's device) that the caller reads when it
// needs them (once per training step), not in host values that would wait for the device.
void sum_squares(const Tensor& x, Tensor& sum);  // sum [1] += x . x, in double, fixed order

// Columns: dst = [srcs[0] | srcs[1] | ...] along the last dim, and the inverse.
void concat_cols(std::span<const Tensor> srcs, Tensor& dst);
void split_cols(const Tensor& src, std::span<Tensor> dsts);

// Heads: dst [n, H, da + db] = [a | b] in every head, a [n, H, da], b [n, H or 1, db] (b of one
// head is broadcast to every head: MLA's shared RoPE key). split_heads is the inverse; a b of one
// head receives the sum over the heads (the gradient of the broadcast).
void concat_heads(const Tensor& a, const Tensor& b, Tensor& dst);
void split_heads(const Tensor& src, Tensor& a, Tensor& b);
// dst [d1, d0, d2] = src [d0, d1, d2] (the first two dims swapped).
void transpose01(const Tensor& src, Tensor& dst);

// RMSNorm over the last dim. rstd [rows] is saved for backward.
void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd);
// dx = (accumulate ? dx : 0) + d/dx; dweight accumulates.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight, bool accumulate_dx);

// RoPE, in place on x [batch, seq, heads, head_dim] with tables cos/sin [seq, rotary / 2]: the
// first `rotary` dims of each head turn (partial RoPE when rotary < head_dim, as Qwen3-Next's),
// the rest pass through. inverse = rotate by the negative angle, the forward rotation's backward.
enum class RopeStyle { rotate_half, interleaved };
// cos/sin [positions, half] of the angles position * inv_freq[j] (inv_freq [half], f32), each
// times attention_factor (YaRN's; 1 otherwise). models/rope.h computes the frequencies.
void rope_tables(const Tensor& inv_freq, float attention_factor, Tensor& cos, Tensor& sin);
void rope(Tensor& x, const Tensor& cos, const Tensor& sin, RopeStyle style, bool inverse);

// Causal attention, q [B, T, H, hd], k [B, T, KV, hd], v [B, T, KV, dv] (H % KV == 0; query head
// h reads kv head h / (H / KV); dv may differ from hd, as in MLA), scores scale * q.k, out [B, T,
// H, dv], lse [B, H, T] (log-sum-exp saved for backward). Computed in query blocks: no T x T
// score matrix is ever held per head. row_max (optional, [B, H, T]): each query's largest
// scaled score, the pre-softmax logit QK-clip measures.
//
// `operands` is the dtype the attention's matrices are rounded to (docs/precision.md): f32, or
// bf16 (a bf16 run's, as cuDNN's fused attention takes them): q, k, v (and backward's dout) are
// rounded to bf16 on entry and out (backward: dq, dk, dv) on exit, while the scores, the softmax,
// lse, row_max and every sum stay fp32. All tensors are f32; backward reads `out` as the forward
// wrote it (rowsum(dout * out) is the softmax's correction term).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor& out,
                       Tensor& lse, Tensor* row_max = nullptr, DType operands = DType::f32);
// acc [H] = max(acc, the largest of row_max [B, H, T] per head).
void head_max(const Tensor& row_max, Tensor& acc);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        float scale, const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk,
                        Tensor& dv, DType operands = DType::f32);

// SwiGLU gate on the fused projection gate_up = [gate | up] ([rows, 2I]):
// out = silu(gate) * up ([rows, I]); backward writes dgate_up in the same fused layout.
void swiglu_forward(const Tensor& gate_up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up);

// Sigmoid gate: y = x * sigmoid(gate), gate of x's shape or [rows, 1] (one gate per row, broadcast:
// Qwen's shared-expert gate); gated attention's output gate is the first. backward overwrites dx
// and dgate (a row gate receives the sum over its row).
void sigmoid_gate(const Tensor& x, const Tensor& gate, Tensor& y);
void sigmoid_gate_backward(const Tensor& dy, const Tensor& x, const Tensor& gate, Tensor& dx,
                           Tensor& dgate);

// A tensor-parallel block of the vocabulary: rows (or logit columns) of ids [first, first +
// valid) of a vocabulary of `vocab` ids; rows past `valid` are padding. vocab = -1: the block is
// the whole vocabulary (its row count).
struct VocabShard {
  int64_t first = 0, valid = -1, vocab = -1;
};

// Embedding rows: out[i] = table[ids[i]] (ids [n] i32; zero for ids of another rank's block);
// backward accumulates into dtable.
// Ids outside [0, vocab), here and in the cross-entropy's targets: with `outside` null, an Error
// naming the id (a device reads the ids back for it); with `outside` ([1] f64 on the ids'
// device), their number is added to it and they read no row, so that a caller checks all its
// ops' ids with the one read it makes anyway (Model: the step's sums). The backward takes the
// forward's ids and does not check them again (ids outside add nothing), so a step that counts
// them raises at its read on every backend, not inside the backward.
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out,
                       const VocabShard& shard = {}, Tensor* outside = nullptr);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable,
                        const VocabShard& shard = {});

// Output head fused with cross-entropy: logits = h @ w^T, processed in row chunks so the
// [rows, vocab] logits never exist at once. Adds the sum over rows of CE(logits, target) into
// loss_sum ([1] f64, a device scalar).
// With dh non-null, also dh = grad_scale * dCE/dh and dw += grad_scale * dCE/dw (grad_scale is
// the weight of the summed loss, e.g. 1/rows for a mean). targets [rows] i32. workspace: any f32
// tensor of at least ce_workspace_size(rows, vocab) elements (on the same device).
int64_t ce_workspace_size(int64_t rows, int64_t vocab, Device device = {});
void head_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, float grad_scale,
                        Tensor* dh, Tensor* dw, Tensor& workspace, Tensor& loss_sum,
                        Tensor* outside = nullptr);

// Vocabulary-parallel cross-entropy in three pieces, for logits [rows, cols] of this rank's
// vocabulary block (no rank ever holds all logits; docs/parallelism.md):
// stats [rows, 3] = this block's (max logit, sum exp(logit - max), the target's logit or 0)
// (targets [rows] i32);
void ce_shard_stats(const Tensor& logits, const Tensor& targets, const VocabShard& shard,
                    Tensor& stats, Tensor* outside = nullptr);
// every block's stats [parts, rows, 3] -> lse [rows]; adds the sum over rows of lse - target
// into loss_sum ([1] f64);
void ce_combine_stats(const Tensor& all_stats, Tensor& lse, Tensor& loss_sum);
// logits -> their gradient in place: grad_scale * (softmax - onehot), padding columns zero.
void ce_shard_backward(Tensor& logits, const Tensor& targets, const VocabShard& shard,
                       const Tensor& lse, float grad_scale);

// AdamW as torch.optim.AdamW: decoupled decay, bias-corrected moments; step counts from 1.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};
void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s);

// ---------------------------------------------------------------------------------------------
// Mixture-of-experts routing (docs/moe.md; kernels in core/ops_moe.cc). Index tensors are i32.

enum class Scoring { sigmoid, softmax };
struct RouterConfig {
  int64_t experts = 0, k = 1, n_group = 1, topk_group = 1;
  Scoring scoring = Scoring::sigmoid;
  bool norm_topk_prob = true;
  float scaling = 1.0f;
};

// logits [N, E] -> scores [N, E]; selection by top-k of scores + bias within the best groups
// (ties to the lower index) -> topk_idx [N, k] (i32); gates [N, k] from the unbiased scores.
void router_forward(const Tensor& logits, const Tensor& bias, const RouterConfig& cfg,
                    Tensor& scores, Tensor& topk_idx, Tensor& gates);
// Adds the gradient of the gates (dgates [N, k]) into dscores [N, E], then turns dscores into
// logit gradients added into dlogits [N, E] (sigmoid or softmax backward).
void router_backward(const Tensor& dgates, const Tensor& scores, const Tensor& topk_idx,
                     const RouterConfig& cfg, Tensor& dscores, Tensor& dlogits);

// The balance losses of one MoE layer (coefficient-weighted) and router statistics.
struct BalanceConfig {
  float seq_alpha = 0, aux_coeff = 0, z_coeff = 0;
  int64_t batch = 1, seq = 1;  // N = batch * seq rows, sequences of seq rows
};
// The balance losses (weighted by their coefficients) and the routing entropy, in this order in
// a sums tensor [kBalanceSums] f64.
enum BalanceSum : int64_t { kSeqAux, kAux, kZ, kEntropy, kBalanceSums };
// counts [E] i64 are the assignments per expert after top-k (for the batch loss). With sums
// non-null, adds the losses into it; with grads requested, dscores and dlogits are overwritten
// with grad_scale * the losses' gradients.
void balance_losses(const Tensor& logits, const Tensor& scores, const Tensor& counts,
                    const RouterConfig& rc, const BalanceConfig& bc, float grad_scale,
                    Tensor* dscores, Tensor* dlogits, Tensor* sums);

// Which permuted row carries which (token, slot): assignments sorted by expert, stable in
// token order, with per-expert capacity (0 = dropless; lowest-score overflow dropped). Tensors
// on the routing's device, made once for N tokens of k slots over E experts
// (make_dispatch_plan) and refilled by each plan_dispatch; the kept row count, the dropped
// count and (where host_counts and host_offsets are defined) the counts and offsets come back to
// the host with it, in one transfer: the sizes of the next buffers, the loads the bias update
// reads and the experts' row ranges (on a device, the one copy to the host per MoE layer).
struct DispatchPlan {
  Tensor counts;     // [E] i64 assignments routed to each expert (before capacity)
  Tensor offsets;    // [E + 1] i64 kept rows of expert e: [offsets[e], offsets[e+1])
  Tensor row_token;  // [N * k] i32 token of each permuted row; the first `rows` are meant
  Tensor slot_row;   // [N * k] i32 permuted row of each slot, -1 when dropped
  int64_t rows = 0, dropped = 0;
  // counts and offsets again, on the host (optional: undefined or both defined; zeros on meta).
  Tensor host_counts, host_offsets;
  // The token of each kept permuted row: [rows] i32.
  Tensor row_tokens() const { return row_token.view(0, {rows}); }
};
DispatchPlan make_dispatch_plan(int64_t tokens, int64_t k, int64_t experts, Device device = {});
// A tensor-parallel rank's share of a plan: the kept rows of the tokens [begin, end), in plan
// order (grouped by expert, tokens in order within one), renumbered from 0.
struct PlanSlice {
  int64_t begin = 0, end = 0;
  Tensor row_token;    // [N * k] i32: the first `rows` are the slice's rows' tokens
  Tensor slot_row;     // [N * k] i32: each slot's row of the slice, -1 when dropped or outside
  Tensor host_counts;  // [E] i64 on the host: the slice's rows of each expert
  int64_t rows = 0;    // the sum of host_counts
  Tensor row_tokens() const { return row_token.view(0, {rows}); }
};
PlanSlice make_plan_slice(int64_t tokens, int64_t k, int64_t experts, int64_t begin, int64_t end,
                          Device device = {});
// The plan of topk_idx [N, k] (scores [N, E] rank the slots when capacity > 0 drops some), and
// with `slice` that slice of it too. A device backend brings the plan's sizes and host tensors
// (the slice's counts included) in one device-to-host copy.
void plan_dispatch(const Tensor& topk_idx, const Tensor& scores, int64_t capacity,
                   DispatchPlan& plan, PlanSlice* slice = nullptr);

// dst[r] = src[row_token[r]] for the first row_token.numel() rows of dst (row_token i32).
void gather_rows(const Tensor& src, const Tensor& row_token, Tensor& dst);
// dst[t] (+)= sum_j w[t*k+j] * src[slot_row[t*k+j]] over kept slots (slot_row [N * k] i32);
// weights may be undefined (1).
void combine_rows(const Tensor& src, const Tensor& slot_row, const Tensor& weights, int64_t k,
                  Tensor& dst, bool accumulate);
// Backward of combine_rows with weights: dsrc[row] = w * dy[t]; dweights[slot] = dy[t].src[row]
// (0 for dropped slots).
void combine_rows_backward(const Tensor& dy, const Tensor& src, const Tensor& slot_row,
                           const Tensor& weights, int64_t k, Tensor& dsrc, Tensor& dweights);

// Aux-loss-free balancing: bias[e] += speed * sign(mean(counts) - counts[e]) (counts [E] i64).
void balance_bias_update(Tensor& bias, const Tensor& counts, float speed);

// Grouped GEMM over experts: rows [offsets[e], offsets[e+1]) of x times weights[e]^T into the
// same rows of y ([R, out]); and its weight gradient dweights[e] += dy_e^T x_e. offsets [E + 1]
// i64, on x's device or on the host: a device backend loops over the experts on the host, so
// host offsets save it a copy back.
void grouped_matmul(const Tensor& x, std::span<const Tensor> weights, const Tensor& offsets,
                    Tensor& y);
void grouped_matmul_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> weights,
                             const Tensor& offsets, std::span<Tensor> dweights, Tensor& dx);

// ---------------------------------------------------------------------------------------------
// Moving values between a device and the host, for the few that the host needs (the sizes of
// buffers, statistics for the log): a Tensor of `values` on `device`, and a tensor's values.

template <typename T>
Tensor from_host(std::span<const T> values, Device device = {});
template <typename T>
std::vector<T> to_host(const Tensor& t);
// Writes `values` into the device tensor `t` (its numel values).
template <typename T>
void copy_from_host(std::span<const T> values, Tensor& t);
// A copy of `t` on `device`.
Tensor to_device(const Tensor& t, Device device);

}  // namespace moetron::ops
