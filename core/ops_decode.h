// Ops for incremental decoding (docs/generate.md), beside the training op set of core/ops.h.
#pragma once

#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace moetron::ops {

// Causal attention of n new queries at absolute positions [start, start + n) over a KV cache:
// q [n, H, hd]; keys_t [KV, hd, max_len] (keys transposed: the scores of a query against all
// positions are then contiguous vector work); values [max_len, KV, hd]; positions [0, start + n)
// filled, the new ones included; out [n, H, hd]. Query i sees keys 0 .. start + i; query head h
// reads kv head h / (H / KV). Each (query, head) is computed the same way whatever n and start,
// so a position gets the same bits fed alone or in a chunk.
void attention_decode(const Tensor& q, const Tensor& keys_t, const Tensor& values, int64_t start,
                      Tensor& out);
// Absorbed MLA decoding (docs/model.md): queries q [H, n, dk] (head-major) of positions [start,
// start + n) over a latent cache [max_len, dk] of one row per position, whose first dv columns
// are also the values (MLA's normalised latent; the rest is the shared RoPE key); out [H, n,
// dv], scores scale * q.row. Query i sees rows 0 .. start + i, computed in attention_decode's
// fixed order, so a position gets the same bits fed alone or in a chunk.
void attention_decode_latent(const Tensor& q, const Tensor& cache, int64_t start, float scale,
                             Tensor& out);
// Writes the keys k [n, KV, hd] of positions [start, start + n) into keys_t [KV, hd, max_len].
void store_keys(const Tensor& k, int64_t start, Tensor& keys_t);

// y = x w^T from the transposed weight wt = w^T ([in, out]; w is stored [out, in], as linear
// layers store it): matmul(x, false, w, true, y) to fp32 rounding, but each element one chain of
// fused multiply-adds over the inputs in order, so a row's result is the same bits whatever rows
// come with it. A GEMM chooses kernels by the row count: without this, a position's logits would
// depend on whether it was decoded alone or verified in a chunk. Fast for the few rows of a
// decoding step (vectorised across outputs, each weight read once per two rows).
void linear_rows(const Tensor& x, const Tensor& wt, Tensor& y);
// The same per expert: rows [offsets[e], offsets[e+1]) of x times wts[e] into those rows of y
// (grouped_matmul's contract, with transposed weights; offsets [E + 1] i64).
void grouped_linear_rows(const Tensor& x, std::span<const Tensor> wts, const Tensor& offsets,
                         Tensor& y);
// dst [cols, rows] = src [rows, cols]^T.
void transpose(const Tensor& src, Tensor& dst);

}  // namespace moetron::ops
