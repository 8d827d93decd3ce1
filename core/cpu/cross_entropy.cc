// Output head + softmax cross-entropy, a chunk of rows at a time: only [chunk, vocab] logits
// exist at once, and they are turned into their own gradient in place.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu/fast_math.h"
#include "core/cpu/kernels.h"

namespace moetron::cpu {

int64_t ce_chunk_rows(int64_t rows, int64_t vocab) {
  // ~8 MiB of logits (at least 64 rows, so more for vocabularies above 32k): big enough for
  // efficient GEMMs, small enough to stay out of the way.
  constexpr int64_t kLogitBudget = int64_t{1} << 21;
  return std::max<int64_t>(1, std::min(rows, std::max<int64_t>(64, kLogitBudget / vocab)));
}

double head_cross_entropy(const float* h, const float* w, const int32_t* targets, int64_t rows,
                          int64_t dim, int64_t vocab, float grad_scale, float* dh, float* dw,
                          float* workspace) {
  const int64_t chunk = ce_chunk_rows(rows, vocab);
  std::vector<double> row_loss(static_cast<size_t>(rows));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    float* logits = workspace;
    sgemm(false, true, n, vocab, dim, 1.0f, h + r0 * dim, dim, w, dim, 0.0f, logits, vocab);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      float* z = logits + r * vocab;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < vocab; ++c) mx = std::max(mx, z[c]);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < vocab; ++c) sum += fast_exp(z[c] - mx);
      // A target outside the vocabulary (counted by the caller) has no logit: it adds lse.
      const int32_t t = targets[r0 + r];
      const bool inside = t >= 0 && t < vocab;
      row_loss[r0 + r] = std::log(static_cast<double>(sum)) + mx - (inside ? z[t] : 0.0f);
      if (dh) {
        const float k = grad_scale / sum;
#pragma omp simd
        for (int64_t c = 0; c < vocab; ++c) z[c] = fast_exp(z[c] - mx) * k;
        if (inside) z[t] -= grad_scale;
      }
    }
    if (dh) {
      sgemm(false, false, n, dim, vocab, 1.0f, logits, vocab, w, dim, 0.0f, dh + r0 * dim, dim);
      sgemm(true, false, vocab, dim, n, 1.0f, logits, vocab, h + r0 * dim, dim, 1.0f, dw, dim);
    }
  }
  double total = 0.0;
  for (double l : row_loss) total += l;
  return total;
}

void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows, int64_t cols,
                    int64_t first, int64_t valid, float* stats) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < valid; ++c) mx = std::max(mx, z[c]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < valid; ++c) sum += fast_exp(z[c] - mx);
    const int64_t t = targets[r] - first;
    stats[r * 3] = valid > 0 ? mx : 0.0f;
    stats[r * 3 + 1] = sum;
    stats[r * 3 + 2] = t >= 0 && t < valid ? z[t] : 0.0f;  // exactly one block holds it
  }
}

double ce_combine_stats(const float* all_stats, int64_t parts, int64_t rows, float* lse) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < parts; ++p)
      if (all_stats[(p * rows + r) * 3 + 1] > 0.0f)
        mx = std::max(mx, all_stats[(p * rows + r) * 3]);
    double sum = 0.0, target = 0.0;
    for (int64_t p = 0; p < parts; ++p) {
      const float* s = all_stats + (p * rows + r) * 3;
      if (s[1] > 0.0f) sum += static_cast<double>(s[1]) * std::exp(static_cast<double>(s[0] - mx));
      target += s[2];
    }
    const double l = std::log(sum) + mx;
    lse[r] = static_cast<float>(l);
    total += l - target;
  }
  return total;
}

void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows, int64_t cols,
                       int64_t first, int64_t valid, const float* lse, float grad_scale) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * cols;
    const float l = lse[r];
#pragma omp simd
    for (int64_t c = 0; c < valid; ++c) z[c] = fast_exp(z[c] - l) * grad_scale;
    for (int64_t c = valid; c < cols; ++c) z[c] = 0.0f;  // padding: no gradient
    const int64_t t = targets[r] - first;
    if (t >= 0 && t < valid) z[t] -= grad_scale;
  }
}

}  // namespace moetron::cpu
