// CPU kernels behind core/ops.h: raw row-major fp32 memory, shapes already checked.
#pragma once

#include <cstdint>

namespace moetron::cpu {

// Row-major sgemm: C[m,n] = alpha * op(A) op(B) + beta * C with leading dims lda/ldb/ldc.
// With oneDNN (OpenMP runtime) a call inside a parallel region runs on the calling thread
// alone; the OpenBLAS fallback may start its own threads there (slower, still correct).
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
// The OpenBLAS path, kept as fallback and cross-check of the oneDNN one.
void sgemm_openblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc);
const char* gemm_backend();
// The same with bf16 A and B (uint16_t bit patterns) and an fp32 C, products accumulated in
// fp32: oneDNN's bf16 matmul where this CPU has one (AVX-512, fastest with AVX-512 BF16 or AMX);
// otherwise A and B widened to fp32 and sgemm (the same results, no faster).
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
               int64_t ldc);
// Which of the two gemm_bf16 uses here.
const char* gemm_bf16_backend();
// fp32 -> bf16 (round to nearest, ties to even) and back.
void to_bf16(const float* src, uint16_t* dst, int64_t n);
void from_bf16(const uint16_t* src, float* dst, int64_t n);
// dst = src rounded to bf16 and widened back (exact); in place allowed.
void round_bf16(const float* src, float* dst, int64_t n);

void fill(float* x, int64_t n, float value);
void add(const float* a, const float* b, float* out, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);
void scale(float* x, int64_t n, float s);
double sum_squares(const float* x, int64_t n);
// Copies a [rows, cols] block between matrices of row strides ld_src / ld_dst.
void copy_block(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows,
                int64_t cols);

void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols);
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols);

void rope_tables(int64_t positions, int64_t half, const float* inv_freq, float attention_factor,
                 float* cos, float* sin);
// Rotates the first 2 * half dims of each head (cos, sin [seq, half]).
void rope(float* x, const float* cos, const float* sin, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t half, bool interleaved, bool inverse);

// [n, heads, da + db] from [n, heads, da] and [n, heads (or 1: broadcast), db], and back (a
// broadcast b receives the sum over the heads).
void concat_heads(const float* a, const float* b, float* dst, int64_t n, int64_t heads, int64_t da,
                  int64_t db, bool broadcast);
void split_heads(const float* src, float* a, float* b, int64_t n, int64_t heads, int64_t da,
                 int64_t db, bool broadcast);
void transpose01(const float* src, int64_t d0, int64_t d1, int64_t d2, float* dst);

// q, k [B, T, heads or kv_heads, head_dim]; v [B, T, kv_heads, v_dim]; out [B, T, heads, v_dim].
struct AttentionShape {
  int64_t batch, seq, heads, kv_heads, head_dim, v_dim;
  float scale;  // of the scores q.k
};
// row_max (optional, [B, H, T]): each query's largest scaled score (QK-clip's measure).
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse, float* row_max);
// acc[h] = max(acc[h], max over b, t of row_max[b, h, t]).
void head_max(const float* row_max, int64_t batch, int64_t heads, int64_t seq, float* acc);
void attention_backward(const AttentionShape& s, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, float* dq, float* dk,
                        float* dv);

// gate_up rows are [gate (width) | up (width)].
void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width);
void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width);

// Rows of table (its first row is id `first`, `rows` of them); ids outside give zero rows.
void embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t first,
                       int64_t rows, int64_t dim, float* out);
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows);

int64_t ce_chunk_rows(int64_t rows, int64_t vocab);
// Vocabulary-parallel cross-entropy pieces; logits [rows, cols], of which the first `valid`
// columns are vocabulary ids first..first+valid-1.
void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows, int64_t cols,
                    int64_t first, int64_t valid, float* stats);
double ce_combine_stats(const float* all_stats, int64_t parts, int64_t rows, float* lse);
void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows, int64_t cols,
                       int64_t first, int64_t valid, const float* lse, float grad_scale);
double head_cross_entropy(const float* h, const float* w, const int32_t* targets, int64_t rows,
                          int64_t dim, int64_t vocab, float grad_scale, float* dh, float* dw,
                          float* workspace);

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, int64_t step);

}  // namespace moetron::cpu
