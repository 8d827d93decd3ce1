// Causal attention in fp32, a query row (or a key row) per thread: the device's fp32 path (cuDNN's
// fused attention, core/cuda/attention_graph.h, has bf16 only). It exists for fp32 runs on a
// device and so that the op harness can hold a device backend to the CPU's fp32 results; it is
// plain, not fast: every score is recomputed where it is needed and no tile is shared between
// threads. Layouts are the CPU backend's: q [B, T, H, hd], k [B, T, KV, hd], v [B, T, KV, dv],
// out [B, T, H, dv], lse and row_max [B, H, T].
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

struct AttentionDims {
  int64_t batch, seq, heads, kv_heads, head_dim, v_dim;
  float scale;  // of the scores q.k
};

// The rows a thread owns: query rows (b, h, t) in lse's order, key rows (b, g, j) likewise.
MT_HD int64_t attention_query_rows(const AttentionDims& s) {
  return s.batch * s.heads * s.seq;
}
MT_HD int64_t attention_key_rows(const AttentionDims& s) {
  return s.batch * s.kv_heads * s.seq;
}

MT_HD float attention_dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t c = 0; c < n; ++c) acc = fmaf(a[c], b[c], acc);
  return acc;
}

// Where row t of head h of batch b starts in a [B, T, heads, width] tensor.
MT_HD int64_t attention_row(int64_t b, int64_t t, int64_t h, int64_t seq, int64_t heads,
                            int64_t width) {
  return ((b * seq + t) * heads + h) * width;
}

// Query row `item`: out's row, lse = max + log(sum of exp) and row_max (when not null) = the
// largest scaled score, by an online softmax over the keys 0..t, then a second pass for out.
MT_HD void attention_forward_row(const AttentionDims& s, const float* q, const float* k,
                                 const float* v, float* out, float* lse, float* row_max,
                                 int64_t item) {
  const int64_t t = item % s.seq, h = item / s.seq % s.heads, b = item / (s.seq * s.heads);
  const int64_t g = h / (s.heads / s.kv_heads);
  const float* qr = q + attention_row(b, t, h, s.seq, s.heads, s.head_dim);
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t j = 0; j <= t; ++j) {
    const float sc =
        s.scale *
        attention_dot(qr, k + attention_row(b, j, g, s.seq, s.kv_heads, s.head_dim), s.head_dim);
    if (sc > mx) {
      sum = sum * expf(mx - sc) + 1.0f;
      mx = sc;
    } else {
      sum += expf(sc - mx);
    }
  }
  const float l = mx + logf(sum);
  float* o = out + attention_row(b, t, h, s.seq, s.heads, s.v_dim);
  for (int64_t c = 0; c < s.v_dim; ++c) o[c] = 0.0f;
  for (int64_t j = 0; j <= t; ++j) {
    const float p =
        expf(s.scale * attention_dot(qr, k + attention_row(b, j, g, s.seq, s.kv_heads, s.head_dim),
                                     s.head_dim) -
             l);
    const float* vr = v + attention_row(b, j, g, s.seq, s.kv_heads, s.v_dim);
    for (int64_t c = 0; c < s.v_dim; ++c) o[c] = fmaf(p, vr[c], o[c]);
  }
  lse[item] = l;
  if (row_max) row_max[item] = mx;
}

// dsum[item] = dout . out of query row `item` (the backward's rowsum(dO O)).
MT_HD void attention_dsum_row(const AttentionDims& s, const float* dout, const float* out,
                              float* dsum, int64_t item) {
  const int64_t t = item % s.seq, h = item / s.seq % s.heads, b = item / (s.seq * s.heads);
  const int64_t r = attention_row(b, t, h, s.seq, s.heads, s.v_dim);
  dsum[item] = attention_dot(dout + r, out + r, s.v_dim);
}

// P and dS = P (dP - dsum) of query row (b, h, t) against key row j.
struct AttentionGrad {
  float p, ds;
};
MT_HD AttentionGrad attention_grad_at(const AttentionDims& s, const float* dout, const float* q,
                                      const float* k, const float* v, const float* lse,
                                      const float* dsum, int64_t b, int64_t h, int64_t t,
                                      int64_t j) {
  const int64_t g = h / (s.heads / s.kv_heads), row = (b * s.heads + h) * s.seq + t;
  const float sc =
      s.scale * attention_dot(q + attention_row(b, t, h, s.seq, s.heads, s.head_dim),
                              k + attention_row(b, j, g, s.seq, s.kv_heads, s.head_dim),
                              s.head_dim);
  const float p = expf(sc - lse[row]);
  const float dp = attention_dot(dout + attention_row(b, t, h, s.seq, s.heads, s.v_dim),
                                 v + attention_row(b, j, g, s.seq, s.kv_heads, s.v_dim), s.v_dim);
  return {p, p * (dp - dsum[row])};
}

// dq of query row `item` = scale sum over keys j <= t of dS k_j (overwritten).
MT_HD void attention_dq_row(const AttentionDims& s, const float* dout, const float* q,
                            const float* k, const float* v, const float* lse, const float* dsum,
                            float* dq, int64_t item) {
  const int64_t t = item % s.seq, h = item / s.seq % s.heads, b = item / (s.seq * s.heads);
  const int64_t g = h / (s.heads / s.kv_heads);
  float* d = dq + attention_row(b, t, h, s.seq, s.heads, s.head_dim);
  for (int64_t c = 0; c < s.head_dim; ++c) d[c] = 0.0f;
  for (int64_t j = 0; j <= t; ++j) {
    const float ds = s.scale * attention_grad_at(s, dout, q, k, v, lse, dsum, b, h, t, j).ds;
    const float* kr = k + attention_row(b, j, g, s.seq, s.kv_heads, s.head_dim);
    for (int64_t c = 0; c < s.head_dim; ++c) d[c] = fmaf(ds, kr[c], d[c]);
  }
}

// dk and dv of key row `item` (b, g, j), over the group's heads and the queries t >= j
// (overwritten): dk = scale sum dS q_t, dv = sum P dout_t.
MT_HD void attention_dkv_row(const AttentionDims& s, const float* dout, const float* q,
                             const float* k, const float* v, const float* lse, const float* dsum,
                             float* dk, float* dv, int64_t item) {
  const int64_t j = item % s.seq, g = item / s.seq % s.kv_heads, b = item / (s.seq * s.kv_heads);
  const int64_t group = s.heads / s.kv_heads;
  float* dkr = dk + attention_row(b, j, g, s.seq, s.kv_heads, s.head_dim);
  float* dvr = dv + attention_row(b, j, g, s.seq, s.kv_heads, s.v_dim);
  for (int64_t c = 0; c < s.head_dim; ++c) dkr[c] = 0.0f;
  for (int64_t c = 0; c < s.v_dim; ++c) dvr[c] = 0.0f;
  for (int64_t h = g * group; h < (g + 1) * group; ++h)
    for (int64_t t = j; t < s.seq; ++t) {
      const AttentionGrad a = attention_grad_at(s, dout, q, k, v, lse, dsum, b, h, t, j);
      const float ds = s.scale * a.ds;
      const float* qr = q + attention_row(b, t, h, s.seq, s.heads, s.head_dim);
      const float* dor = dout + attention_row(b, t, h, s.seq, s.heads, s.v_dim);
      for (int64_t c = 0; c < s.head_dim; ++c) dkr[c] = fmaf(ds, qr[c], dkr[c]);
      for (int64_t c = 0; c < s.v_dim; ++c) dvr[c] = fmaf(a.p, dor[c], dvr[c]);
    }
}

}  // namespace moetron::kernels
