// MoE routing: scores, group-limited top-k with deterministic ties, gates, their backward,
// the balance losses, and the row permutations around the grouped expert GEMM.
#include "core/cpu/router.h"

#include "core/kernels/host.h"
#include "core/kernels/router.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace moetron::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

void router_forward(const Router& r, const float* logits, const float* bias, float* scores,
                    int32_t* topk_idx, float* gates) {
  kernels::host::router_forward(
      {r.experts, r.k, r.n_group, r.topk_group, r.softmax, r.norm_topk_prob, r.scaling}, r.tokens,
      logits, bias, scores, topk_idx, gates);
}

void router_backward(const Router& r, const float* dgates, const float* scores,
                     const int32_t* topk_idx, float* dscores, float* dlogits) {
  const int64_t E = r.experts;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < r.tokens; ++t) {
    const float* s = scores + t * E;
    const int32_t* idx = topk_idx + t * r.k;
    const float* dg = dgates + t * r.k;
    float* ds = dscores + t * E;
    if (r.norm_topk_prob) {
      // g_j = c s_j / S with S = sum_i s_i + 1e-20 over the chosen experts.
      float sum = 0, dot = 0;
      for (int64_t j = 0; j < r.k; ++j) sum += s[idx[j]];
      sum += 1e-20f;
      for (int64_t j = 0; j < r.k; ++j) dot += dg[j] * s[idx[j]];
      for (int64_t j = 0; j < r.k; ++j) ds[idx[j]] += r.scaling * (dg[j] / sum - dot / (sum * sum));
    } else {
      for (int64_t j = 0; j < r.k; ++j) ds[idx[j]] += r.scaling * dg[j];
    }
    float* du = dlogits + t * E;
    if (r.softmax) {
      float dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += ds[e] * s[e];
      for (int64_t e = 0; e < E; ++e) du[e] += s[e] * (ds[e] - dot);
    } else {
      for (int64_t e = 0; e < E; ++e) du[e] += ds[e] * s[e] * (1.0f - s[e]);
    }
  }
}

void balance_losses(const Router& r, const Balance& b, const float* logits, const float* scores,
                    const int64_t* counts, float grad_scale, float* dscores, float* dlogits,
                    double out[4]) {
  const int64_t E = r.experts, N = r.tokens, T = b.seq;
  const bool grads = dscores != nullptr;
  // Per-sequence f (top-k of the unbiased scores) and the batch f; both constants.
  std::vector<double> f_seq(static_cast<size_t>(b.batch * E), 0.0), f_batch(static_cast<size_t>(E));
  std::vector<int32_t> idx(static_cast<size_t>(r.k));
  if (b.seq_alpha > 0) {
    for (int64_t t = 0; t < N; ++t) {
      kernels::top_n(scores + t * E, E, r.k, idx.data());
      for (int32_t e : idx) f_seq[(t / T) * E + e] += static_cast<double>(E) / (r.k * T);
    }
  }
  for (int64_t e = 0; e < E; ++e) f_batch[e] = static_cast<double>(counts[e]) / (N * r.k);
  std::vector<double> p_seq(static_cast<size_t>(b.batch * E), 0.0),
      p_batch(static_cast<size_t>(E), 0.0);
  double z = 0, entropy = 0;
  std::vector<float> p(static_cast<size_t>(E));
  std::vector<double> dp(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const float* s = scores + t * E;
    const float* u = logits + t * E;
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += s[e];
    for (int64_t e = 0; e < E; ++e) {
      p[e] = static_cast<float>(s[e] / sum);
      p_seq[(t / T) * E + e] += p[e] / static_cast<double>(T);
      p_batch[e] += p[e] / static_cast<double>(N);
      if (p[e] > 0) entropy -= p[e] * std::log(static_cast<double>(p[e]));
    }
    float mx = kNegInf;
    for (int64_t e = 0; e < E; ++e) mx = std::max(mx, u[e]);
    double se = 0;
    for (int64_t e = 0; e < E; ++e) se += std::exp(static_cast<double>(u[e] - mx));
    const double lse = mx + std::log(se);
    z += lse * lse;
    if (!grads) continue;
    float* ds = dscores + t * E;
    float* du = dlogits + t * E;
    // dL/dp, then through p = s / sum(s): ds_j = (dp_j - sum_i dp_i p_i) / sum.
    double dot = 0;
    for (int64_t e = 0; e < E; ++e) {
      dp[e] = b.seq_alpha / static_cast<double>(b.batch) * f_seq[(t / T) * E + e] / T +
              b.aux_coeff * E * f_batch[e] / N;
      dot += dp[e] * p[e];
    }
    for (int64_t e = 0; e < E; ++e) {
      ds[e] = static_cast<float>(grad_scale * (dp[e] - dot) / sum);
      const double soft = std::exp(static_cast<double>(u[e] - mx)) / se;
      du[e] = static_cast<float>(grad_scale * b.z_coeff / N * 2.0 * lse * soft);
    }
  }
  double seq_aux = 0, aux = 0;
  for (int64_t i = 0; i < b.batch * E; ++i) seq_aux += f_seq[i] * p_seq[i];
  for (int64_t e = 0; e < E; ++e) aux += f_batch[e] * p_batch[e];
  out[0] = b.seq_alpha * seq_aux / static_cast<double>(b.batch);
  out[1] = b.aux_coeff * static_cast<double>(E) * aux;
  out[2] = b.z_coeff * z / static_cast<double>(N);
  out[3] = entropy / static_cast<double>(N);
}

void gather_rows(const float* src, const int32_t* row_token, int64_t rows, int64_t dim,
                 float* dst) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dim, src + static_cast<int64_t>(row_token[r]) * dim,
                static_cast<size_t>(dim) * sizeof(float));
}

void combine_rows(const float* src, const int32_t* slot_row, const float* weights, int64_t tokens,
                  int64_t k, int64_t dim, float* dst, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    float* d = dst + t * dim;
    if (!accumulate) std::fill(d, d + dim, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = slot_row[t * k + j];
      if (row < 0) continue;
      const float w = weights ? weights[t * k + j] : 1.0f;
      const float* s = src + static_cast<int64_t>(row) * dim;
#pragma omp simd
      for (int64_t c = 0; c < dim; ++c) d[c] += w * s[c];
    }
  }
}

void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* g = dy + t * dim;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = slot_row[t * k + j];
      if (row < 0) {
        dweights[t * k + j] = 0.0f;
        continue;
      }
      const float w = weights[t * k + j];
      const float* s = src + static_cast<int64_t>(row) * dim;
      float* ds = dsrc + static_cast<int64_t>(row) * dim;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < dim; ++c) {
        ds[c] = w * g[c];
        dot += g[c] * s[c];
      }
      dweights[t * k + j] = dot;
    }
  }
}

void plan_dispatch(const int32_t* idx, const float* s, int64_t n, int64_t k, int64_t experts,
                   int64_t capacity, int64_t* counts, int64_t* offsets, int32_t* row_token,
                   int32_t* slot_row, int64_t* rows, int64_t* dropped) {
  std::fill(counts, counts + experts, 0);
  for (int64_t i = 0; i < n * k; ++i) ++counts[idx[i]];
  // kept[slot]: with a capacity, each expert keeps its highest-score assignments.
  std::vector<uint8_t> kept(static_cast<size_t>(n * k), 1);
  *dropped = 0;
  if (capacity > 0) {
    std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(experts));
    for (int64_t i = 0; i < n * k; ++i) by_expert[idx[i]].push_back(i);
    for (int64_t e = 0; e < experts; ++e) {
      auto& slots = by_expert[e];
      if (static_cast<int64_t>(slots.size()) <= capacity) continue;
      // Highest score first, ties to the lower token (slots are in token order).
      std::stable_sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) {
        return s[(a / k) * experts + e] > s[(b / k) * experts + e];
      });
      for (size_t i = static_cast<size_t>(capacity); i < slots.size(); ++i) kept[slots[i]] = 0;
      *dropped += static_cast<int64_t>(slots.size()) - capacity;
    }
  }
  std::fill(offsets, offsets + experts + 1, 0);
  for (int64_t i = 0; i < n * k; ++i)
    if (kept[i]) ++offsets[idx[i] + 1];
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] += offsets[e];
  std::vector<int64_t> fill(offsets, offsets + experts);
  *rows = offsets[experts];
  for (int64_t i = 0; i < n * k; ++i) {  // token order within each expert: stable
    if (!kept[i]) {
      slot_row[i] = -1;
      continue;
    }
    const int64_t row = fill[idx[i]]++;
    slot_row[i] = static_cast<int32_t>(row);
    row_token[row] = static_cast<int32_t>(i / k);
  }
}

void balance_bias_update(float* bias, const int64_t* counts, int64_t experts, float speed) {
  double mean = 0;
  for (int64_t e = 0; e < experts; ++e) mean += static_cast<double>(counts[e]);
  mean /= static_cast<double>(experts);
  for (int64_t e = 0; e < experts; ++e) {
    const double diff = mean - static_cast<double>(counts[e]);
    bias[e] += speed * static_cast<float>((diff > 0) - (diff < 0));
  }
}

}  // namespace moetron::cpu
