// CPU kernels behind core/ops_decode.h: raw row-major fp32 memory, shapes already checked.
#pragma once

#include <cstdint>

namespace moetron::cpu {

struct DecodeAttentionShape {
  int64_t queries, start, heads, kv_heads, head_dim, max_len;
};
// k_t: keys transposed, [kv_heads, head_dim, max_len]; v: [max_len, kv_heads, head_dim].
void attention_decode(const DecodeAttentionShape& s, const float* q, const float* k_t,
                      const float* v, float* out);
// q [heads, queries, dk] over cache [max_len, dk] whose first dv columns are the values; out
// [heads, queries, dv].
struct LatentAttentionShape {
  int64_t heads, queries, start, dk, dv;
  float scale;
};
void attention_decode_latent(const LatentAttentionShape& s, const float* q, const float* cache,
                             float* out);
// k [n, kv_heads, head_dim] -> k_t[h, c, start + i].
void store_keys(const float* k, int64_t n, int64_t kv_heads, int64_t head_dim, int64_t start,
                int64_t max_len, float* k_t);

// y [rows, out] = x [rows, in] wt [in, out], each element one chain of FMAs over k in order.
void linear_rows(const float* x, int64_t rows, int64_t in, const float* wt, int64_t out, float* y);
// dst [cols, rows] = src [rows, cols]^T.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst);

}  // namespace moetron::cpu
