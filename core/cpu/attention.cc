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
                       float* out, float* lse, float* row_max) {
  const int64_t hd = s.head_dim, dv = s.v_dim, group = s.heads / s.kv_heads;
  const HeadView qv{s.heads * hd}, kv{s.kv_heads * hd}, vv{s.kv_heads * dv}, ov{s.heads * dv};
  const float scale = s.scale;
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
      const float* vb = v + vv.offset(b, 0, kvh, s.seq, dv);
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
        if (row_max) row_max[(b * s.heads + h) * s.seq + t0 + r] = mx;
      }
      sgemm(false, false, rows, dv, t1, 1.0f, sc, t1, vb, vv.ld, 0.0f,
            out + ov.offset(b, t0, h, s.seq, dv), ov.ld);
    }
  }
}

void head_max(const float* row_max, int64_t batch, int64_t heads, int64_t seq, float* acc) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const float* r = row_max + (b * heads + h) * seq;
      acc[h] = std::max(acc[h], *std::max_element(r, r + seq));
    }
}

void attention_backward(const AttentionShape& s, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, float* dq, float* dk,
                        float* dvv) {
  // Two passes, each writing only its own rows, so any thread count gives the same bits and
  // small batches with few kv heads still use every thread (FlashAttention-2 would accumulate
  // dq atomically instead; that is neither deterministic nor needed at CPU block sizes):
  //   pass 1, per (batch, head, query block): dq;
  //   pass 2, per (batch, kv head, key block): dk and dv, over the query blocks that see it.
  // The probabilities P = exp(scale q.k - lse) and dS = P (dP - rowsum(dO O)) are recomputed
  // in both.
  const int64_t hd = s.head_dim, dv = s.v_dim, group = s.heads / s.kv_heads;
  const HeadView qv{s.heads * hd}, kv{s.kv_heads * hd}, vv{s.kv_heads * dv}, ov{s.heads * dv};
  const float scale = s.scale;
  const int64_t blocks = (s.seq + kQueryBlock - 1) / kQueryBlock;
  auto lse_at = [&](int64_t b, int64_t h, int64_t t) { return lse[(b * s.heads + h) * s.seq + t]; };

  // rowsum(dO * O) of every query row, [B, H, T].
  std::vector<float> dsum(static_cast<size_t>(s.batch * s.heads * s.seq));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t t = 0; t < s.seq; ++t) {
        const float* dor = dout + ov.offset(b, t, h, s.seq, dv);
        const float* outr = out + ov.offset(b, t, h, s.seq, dv);
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < dv; ++c) acc += dor[c] * outr[c];
        dsum[(b * s.heads + h) * s.seq + t] = acc;
      }

  // Turns scores (scale already applied) and dP of a [rows, cols] tile at query t0 and key c0
  // into P and dS in place; entries above the causal diagonal become 0.
  auto probs_and_dscores = [&](int64_t b, int64_t h, int64_t t0, int64_t rows, int64_t c0,
                               int64_t cols, float* p, float* dp) {
    for (int64_t r = 0; r < rows; ++r) {
      float* pr = p + r * cols;
      float* dpr = dp + r * cols;
      const int64_t valid = std::clamp<int64_t>(t0 + r + 1 - c0, 0, cols);
      const float l = lse_at(b, h, t0 + r), d = dsum[(b * s.heads + h) * s.seq + t0 + r];
#pragma omp simd
      for (int64_t c = 0; c < valid; ++c) {
        pr[c] = fast_exp(pr[c] - l);
        dpr[c] = pr[c] * (dpr[c] - d);
      }
      std::fill(pr + valid, pr + cols, 0.0f);
      std::fill(dpr + valid, dpr + cols, 0.0f);
    }
  };

#pragma omp parallel
  {
    std::vector<float> probs(static_cast<size_t>(kQueryBlock * s.seq));
    std::vector<float> dprobs(static_cast<size_t>(kQueryBlock * s.seq));
    float* p = probs.data();
    float* dp = dprobs.data();
    // Pass 1: dq = scale dS K over keys [0, t1).
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < s.batch * s.heads * blocks; ++task) {
      const int64_t b = task / (s.heads * blocks), h = task / blocks % s.heads;
      const int64_t blk = blocks - 1 - task % blocks;  // heavier blocks first
      const int64_t t0 = blk * kQueryBlock, t1 = std::min(s.seq, t0 + kQueryBlock);
      const int64_t at = qv.offset(b, t0, h, s.seq, hd), at_o = ov.offset(b, t0, h, s.seq, dv);
      const float* kb = k + kv.offset(b, 0, h / group, s.seq, hd);
      const float* vb = v + vv.offset(b, 0, h / group, s.seq, dv);
      sgemm(false, true, t1 - t0, t1, hd, scale, q + at, qv.ld, kb, kv.ld, 0.0f, p, t1);
      sgemm(false, true, t1 - t0, t1, dv, 1.0f, dout + at_o, ov.ld, vb, vv.ld, 0.0f, dp, t1);
      probs_and_dscores(b, h, t0, t1 - t0, 0, t1, p, dp);
      sgemm(false, false, t1 - t0, hd, t1, scale, dp, t1, kb, kv.ld, 0.0f, dq + at, qv.ld);
    }
    // Pass 2: dk = scale dS^T Q and dv = P^T dO for keys [k0, k1), from every query block
    // that sees them, in a fixed order (heads of the group, then query blocks).
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < s.batch * s.kv_heads * blocks; ++task) {
      const int64_t b = task / (s.kv_heads * blocks), kvh = task / blocks % s.kv_heads;
      const int64_t kblk = task % blocks;
      const int64_t k0 = kblk * kQueryBlock, k1 = std::min(s.seq, k0 + kQueryBlock);
      const int64_t cols = k1 - k0, at_k = kv.offset(b, k0, kvh, s.seq, hd);
      const int64_t at_v = vv.offset(b, k0, kvh, s.seq, dv);
      float* dkb = dk + at_k;
      float* dvb = dvv + at_v;
      for (int64_t t = 0; t < cols; ++t) {
        std::fill(dkb + t * kv.ld, dkb + t * kv.ld + hd, 0.0f);
        std::fill(dvb + t * vv.ld, dvb + t * vv.ld + dv, 0.0f);
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        for (int64_t blk = kblk; blk < blocks; ++blk) {
          const int64_t t0 = blk * kQueryBlock, t1 = std::min(s.seq, t0 + kQueryBlock);
          const int64_t rows = t1 - t0, at_q = qv.offset(b, t0, h, s.seq, hd);
          const int64_t at_o = ov.offset(b, t0, h, s.seq, dv);
          sgemm(false, true, rows, cols, hd, scale, q + at_q, qv.ld, k + at_k, kv.ld, 0.0f, p,
                cols);
          sgemm(false, true, rows, cols, dv, 1.0f, dout + at_o, ov.ld, v + at_v, vv.ld, 0.0f, dp,
                cols);
          probs_and_dscores(b, h, t0, rows, k0, cols, p, dp);
          sgemm(true, false, cols, hd, rows, scale, dp, cols, q + at_q, qv.ld, 1.0f, dkb, kv.ld);
          sgemm(true, false, cols, dv, rows, 1.0f, p, cols, dout + at_o, ov.ld, 1.0f, dvb, vv.ld);
        }
    }
  }
}

}  // namespace moetron::cpu
