// The decoding ops of core/ops_decode.h, a (query, head) or an output element per thread: the
// device's decode path. Scores are recomputed in a second pass rather than held (a thread has no
// buffer of its own), with the online softmax of core/kernels/attention.h. linear_rows is the
// CPU's chain of fused multiply-adds over k in order, so it gives the CPU's bits.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/attention.h"
#include "core/kernels/hd.h"

namespace moetron::kernels {

// q [queries, heads, hd] at positions start.., keys transposed k_t [kv_heads, hd, max_len],
// values v [max_len, kv_heads, hd]; out [queries, heads, hd]. task = i * heads + h.
struct DecodeDims {
  int64_t queries, start, heads, kv_heads, head_dim, max_len;
};
MT_HD float decode_score(const DecodeDims& s, const float* qi, const float* kh, int64_t j) {
  float acc = 0.0f;
  for (int64_t c = 0; c < s.head_dim; ++c) acc = fmaf(qi[c], kh[c * s.max_len + j], acc);
  return acc / sqrtf(static_cast<float>(s.head_dim));
}
MT_HD void attention_decode_at(const DecodeDims& s, const float* q, const float* k_t,
                               const float* v, float* out, int64_t task) {
  const int64_t i = task / s.heads, h = task % s.heads, g = h / (s.heads / s.kv_heads);
  const int64_t valid = s.start + i + 1, hd = s.head_dim;
  const float* qi = q + task * hd;
  const float* kh = k_t + g * hd * s.max_len;
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t j = 0; j < valid; ++j) {
    const float sc = decode_score(s, qi, kh, j);
    if (sc > mx) {
      sum = sum * expf(mx - sc) + 1.0f;
      mx = sc;
    } else {
      sum += expf(sc - mx);
    }
  }
  float* o = out + task * hd;
  for (int64_t c = 0; c < hd; ++c) o[c] = 0.0f;
  for (int64_t j = 0; j < valid; ++j) {
    const float p = expf(decode_score(s, qi, kh, j) - mx) / sum;
    const float* vr = v + (j * s.kv_heads + g) * hd;
    for (int64_t c = 0; c < hd; ++c) o[c] = fmaf(p, vr[c], o[c]);
  }
}

// q [heads, queries, dk] over cache [max_len, dk], whose first dv columns are the values; out
// [heads, queries, dv]. task = h * queries + i.
struct LatentDims {
  int64_t heads, queries, start, dk, dv;
  float scale;
};
MT_HD void attention_decode_latent_at(const LatentDims& s, const float* q, const float* cache,
                                      float* out, int64_t task) {
  const int64_t valid = s.start + task % s.queries + 1;
  const float* qi = q + task * s.dk;
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t j = 0; j < valid; ++j) {
    const float sc = attention_dot(qi, cache + j * s.dk, s.dk) * s.scale;
    if (sc > mx) {
      sum = sum * expf(mx - sc) + 1.0f;
      mx = sc;
    } else {
      sum += expf(sc - mx);
    }
  }
  float* o = out + task * s.dv;
  for (int64_t c = 0; c < s.dv; ++c) o[c] = 0.0f;
  for (int64_t j = 0; j < valid; ++j) {
    const float p = expf(attention_dot(qi, cache + j * s.dk, s.dk) * s.scale - mx) / sum;
    for (int64_t c = 0; c < s.dv; ++c) o[c] = fmaf(p, cache[j * s.dk + c], o[c]);
  }
}

// k [n, kv_heads, hd] -> k_t[h, c, start + i]; element i of k.
MT_HD void store_keys_at(const float* k, int64_t kv_heads, int64_t head_dim, int64_t start,
                         int64_t max_len, float* k_t, int64_t i) {
  const int64_t c = i % head_dim, h = i / head_dim % kv_heads, row = i / (head_dim * kv_heads);
  k_t[(h * head_dim + c) * max_len + start + row] = k[i];
}

// y [rows, out] = x [rows, in] wt [in, out]; element i of y.
MT_HD void linear_rows_at(const float* x, int64_t in, const float* wt, int64_t out, float* y,
                          int64_t i) {
  const int64_t r = i / out, j = i % out;
  float acc = 0.0f;
  for (int64_t k = 0; k < in; ++k) acc = fmaf(x[r * in + k], wt[k * out + j], acc);
  y[i] = acc;
}

}  // namespace moetron::kernels
