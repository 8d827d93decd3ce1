// Causal attention, computed a block of queries at a time (FlashAttention's schedule, minus
// the online softmax: a CPU block row of scores fits in cache, so each block holds the full
// row of scores up to its diagonal and no more). Backward recomputes the probabilities from
// the saved log-sum-exp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu/fast_math.h"
#include "core/cpu/kernels.h"

namespace moetron::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;

// Pointers and leading dims of one (batch, head) slice of [B, T, heads, hd] tensors.
struct HeadView {
  int64_t ld;  // row stride: heads * hd
  int64_t offset(int64_t b, int64_t t, int64_t h, int64_t seq, int64_t hd) const {
    return b * seq * ld + t * ld + h * hd;
  }
};

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const HeadView qv{s.heads * hd}, kv{s.kv_heads * hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t blocks = (s.seq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = s.batch * s.heads * blocks;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(kQueryBlock * s.seq));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (s.heads * blocks), h = task / blocks % s.heads;
      // Heavier (later) blocks first: they share the tasks more evenly.
      const int64_t blk = blocks - 1 - task % blocks;
      const int64_t t0 = blk * kQueryBlock, t1 = std::min(s.seq, t0 + kQueryBlock), rows = t1 - t0;
      const int64_t kvh = h / group;
      const float* qb = q + qv.offset(b, t0, h, s.seq, hd);
      const float* kb = k + kv.offset(b, 0, kvh, s.seq, hd);
      const float* vb = v + kv.offset(b, 0, kvh, s.seq, hd);
      float* sc = scores.data();
      sgemm(false, true, rows, t1, hd, scale, qb, qv.ld, kb, kv.ld, 0.0f, sc, t1);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = sc + r * t1;
        const int64_t valid = t0 + r + 1;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < valid; ++c) mx = std::max(mx, row[c]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < valid; ++c) {
          row[c] = fast_exp(row[c] - mx);
          sum += row[c];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t c = 0; c < valid; ++c) row[c] *= inv;
        std::fill(row + valid, row + t1, 0.0f);
        lse[(b * s.heads + h) * s.seq + t0 + r] = mx + std::log(sum);
      }
      sgemm(false, false, rows, hd, t1, 1.0f, sc, t1, vb, kv.ld, 0.0f,
            out + qv.offset(b, t0, h, s.seq, hd), qv.ld);
    }
  }
}

void attention_backward(const AttentionShape& s, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, float* dq, float* dk,
                        float* dv) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads;
  const HeadView qv{s.heads * hd}, kv{s.kv_heads * hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t blocks = (s.seq + kQueryBlock - 1) / kQueryBlock;
  // One task per (batch, kv head): it owns dk/dv of that head, so nothing races.
  const int64_t tasks = s.batch * s.kv_heads;
#pragma omp parallel
  {
    std::vector<float> probs(static_cast<size_t>(kQueryBlock * s.seq));
    std::vector<float> dprobs(static_cast<size_t>(kQueryBlock * s.seq));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / s.kv_heads, kvh = task % s.kv_heads;
      const float* kb = k + kv.offset(b, 0, kvh, s.seq, hd);
      const float* vb = v + kv.offset(b, 0, kvh, s.seq, hd);
      float* dkb = dk + kv.offset(b, 0, kvh, s.seq, hd);
      float* dvb = dv + kv.offset(b, 0, kvh, s.seq, hd);
      for (int64_t t = 0; t < s.seq; ++t) {
        std::fill(dkb + t * kv.ld, dkb + t * kv.ld + hd, 0.0f);
        std::fill(dvb + t * kv.ld, dvb + t * kv.ld + hd, 0.0f);
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t t0 = blk * kQueryBlock, t1 = std::min(s.seq, t0 + kQueryBlock);
          const int64_t rows = t1 - t0;
          const int64_t at = qv.offset(b, t0, h, s.seq, hd);
          float* p = probs.data();
          float* dp = dprobs.data();
          sgemm(false, true, rows, t1, hd, scale, q + at, qv.ld, kb, kv.ld, 0.0f, p, t1);
          sgemm(false, true, rows, t1, hd, 1.0f, dout + at, qv.ld, vb, kv.ld, 0.0f, dp, t1);
          for (int64_t r = 0; r < rows; ++r) {
            float* pr = p + r * t1;
            float* dpr = dp + r * t1;
            const int64_t valid = t0 + r + 1;
            const float l = lse[(b * s.heads + h) * s.seq + t0 + r];
            const float* dor = dout + at + r * qv.ld;
            const float* outr = out + at + r * qv.ld;
            float dsum = 0.0f;  // rowsum(dO * O) = rowsum(P * dP)
#pragma omp simd reduction(+ : dsum)
            for (int64_t c = 0; c < hd; ++c) dsum += dor[c] * outr[c];
#pragma omp simd
            for (int64_t c = 0; c < valid; ++c) {
              pr[c] = fast_exp(pr[c] - l);
              dpr[c] = pr[c] * (dpr[c] - dsum);  // dS, before the 1/sqrt(hd) of the scores
            }
            std::fill(pr + valid, pr + t1, 0.0f);
            std::fill(dpr + valid, dpr + t1, 0.0f);
          }
          sgemm(false, false, rows, hd, t1, scale, dp, t1, kb, kv.ld, 0.0f, dq + at, qv.ld);
          sgemm(true, false, t1, hd, rows, scale, dp, t1, q + at, qv.ld, 1.0f, dkb, kv.ld);
          sgemm(true, false, t1, hd, rows, 1.0f, p, t1, dout + at, qv.ld, 1.0f, dvb, kv.ld);
        }
      }
    }
  }
}

}  // namespace moetron::cpu
