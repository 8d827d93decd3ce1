// The MoE balancing losses and the routing entropy (core/ops.h balance_losses), host and device
// alike, in phases a device runs as separate launches (the CPU backend runs one serial loop,
// core/cpu/router.cc):
//   1. a thread per token: its probabilities p = s / sum(s) [N, E] (fp32, as the CPU's), the
//      stats of its row (sum(s), the logits' max, sum of exp and lse, its entropy) and, for the
//      sequence loss, its top-k of the unbiased scores;
//   2. a thread per (sequence, expert): f_seq and p_seq over the sequence's tokens in order; a
//      thread per expert: f_batch and p_batch over all tokens in order;
//   3. with gradients, a thread per token: dscores and dlogits;
//   4. one thread: the four sums over the tokens and experts in order.
// The expressions are the CPU's, mixed float/double promotions included; the CPU sums the entropy
// in one running total over (token, expert) and these per token first, and g++ contracts the
// CPU's multiply-adds as it likes where these are explicit fma: within 1e-12 of the CPU's sums.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/kernels/hd.h"
#include "core/kernels/router.h"

namespace moetron::kernels {

struct BalanceShape {
  int64_t tokens, experts, k, batch, seq;  // tokens = batch * seq
  float seq_alpha, aux_coeff, z_coeff;
};

// Phase 1's per-token stats: a [tokens, kBalanceStats] double array.
enum BalanceStat : int64_t { kScoreSum, kLogitMax, kExpSum, kLse, kTokenEntropy, kBalanceStats };

MT_HD void balance_token_at(const BalanceShape& b, const float* logits, const float* scores,
                            float* p, double* stats, int32_t* topk, int64_t t) {
  const int64_t E = b.experts;
  const float* s = scores + t * E;
  const float* u = logits + t * E;
  double sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += s[e];
  double entropy = 0;
  for (int64_t e = 0; e < E; ++e) {
    const float pe = static_cast<float>(s[e] / sum);
    p[t * E + e] = pe;
    if (pe > 0) entropy = fma(-static_cast<double>(pe), log(static_cast<double>(pe)), entropy);
  }
  float mx = -INFINITY;
  for (int64_t e = 0; e < E; ++e) mx = u[e] > mx ? u[e] : mx;
  double se = 0;
  for (int64_t e = 0; e < E; ++e) se += exp(static_cast<double>(u[e] - mx));
  double* st = stats + t * kBalanceStats;
  st[kScoreSum] = sum;
  st[kLogitMax] = mx;
  st[kExpSum] = se;
  st[kLse] = mx + log(se);
  st[kTokenEntropy] = entropy;
  if (b.seq_alpha > 0) top_n(s, E, b.k, topk + t * b.k);
}

// f_seq and p_seq [batch, E] at element i = (sequence q, expert e).
MT_HD void balance_sequence_at(const BalanceShape& b, const float* p, const int32_t* topk,
                               double* f_seq, double* p_seq, int64_t i) {
  const int64_t q = i / b.experts, e = i % b.experts, T = b.seq;
  double f = 0, pq = 0;
  for (int64_t t = q * T; t < (q + 1) * T; ++t) {
    if (b.seq_alpha > 0)
      for (int64_t j = 0; j < b.k; ++j)
        if (topk[t * b.k + j] == e) f += static_cast<double>(b.experts) / (b.k * T);
    pq += p[t * b.experts + e] / static_cast<double>(T);
  }
  f_seq[i] = f;
  p_seq[i] = pq;
}

// f_batch and p_batch [E] at expert e.
MT_HD void balance_expert_at(const BalanceShape& b, const float* p, const int64_t* counts,
                             double* f_batch, double* p_batch, int64_t e) {
  const int64_t N = b.tokens;
  f_batch[e] = static_cast<double>(counts[e]) / (N * b.k);
  double pb = 0;
  for (int64_t t = 0; t < N; ++t) pb += p[t * b.experts + e] / static_cast<double>(N);
  p_batch[e] = pb;
}

// dL/dp_e of a token whose sequence's f is fs: the sequence loss's and the batch loss's.
MT_HD double balance_dp(const BalanceShape& b, const double* fs, const double* f_batch, int64_t e) {
  return b.seq_alpha / static_cast<double>(b.batch) * fs[e] / static_cast<double>(b.seq) +
         static_cast<double>(b.aux_coeff * static_cast<float>(b.experts)) * f_batch[e] /
             static_cast<double>(b.tokens);
}

// Token t's gradients times grad_scale: through p = s / sum(s) (ds_j = (dp_j - sum_i dp_i p_i) /
// sum), and the z-loss's through the logits' softmax.
MT_HD void balance_grads_at(const BalanceShape& b, const float* logits, const float* p,
                            const double* stats, const double* f_seq, const double* f_batch,
                            float grad_scale, float* dscores, float* dlogits, int64_t t) {
  const int64_t E = b.experts;
  const double* st = stats + t * kBalanceStats;
  const double* fs = f_seq + (t / b.seq) * E;
  double dot = 0;
  for (int64_t e = 0; e < E; ++e)
    dot = fma(balance_dp(b, fs, f_batch, e), static_cast<double>(p[t * E + e]), dot);
  const auto mx = static_cast<float>(st[kLogitMax]);
  const double z_scale =
      static_cast<double>(grad_scale * b.z_coeff / static_cast<float>(b.tokens)) * 2.0;
  for (int64_t e = 0; e < E; ++e) {
    dscores[t * E + e] =
        static_cast<float>(grad_scale * (balance_dp(b, fs, f_batch, e) - dot) / st[kScoreSum]);
    const double soft = exp(static_cast<double>(logits[t * E + e] - mx)) / st[kExpSum];
    dlogits[t * E + e] = static_cast<float>(z_scale * st[kLse] * soft);
  }
}

// out [4] = {seq_aux, aux, z, entropy} (core/ops.h BalanceSum's order).
MT_HD void balance_sums(const BalanceShape& b, const double* stats, const double* f_seq,
                        const double* p_seq, const double* f_batch, const double* p_batch,
                        double* out) {
  double z = 0, entropy = 0, seq_aux = 0, aux = 0;
  for (int64_t t = 0; t < b.tokens; ++t) {
    const double lse = stats[t * kBalanceStats + kLse];
    z = fma(lse, lse, z);
    entropy += stats[t * kBalanceStats + kTokenEntropy];
  }
  for (int64_t i = 0; i < b.batch * b.experts; ++i) seq_aux = fma(f_seq[i], p_seq[i], seq_aux);
  for (int64_t e = 0; e < b.experts; ++e) aux = fma(f_batch[e], p_batch[e], aux);
  out[0] = b.seq_alpha * seq_aux / static_cast<double>(b.batch);
  out[1] = b.aux_coeff * static_cast<double>(b.experts) * aux;
  out[2] = b.z_coeff * z / static_cast<double>(b.tokens);
  out[3] = entropy / static_cast<double>(b.tokens);
}

// The launcher's scratch: the stats, f and p (double), then p [N, E] (float) and the top-k.
inline size_t balance_scratch_bytes(const BalanceShape& b) {
  const auto doubles =
      static_cast<size_t>(b.tokens * kBalanceStats + 2 * b.batch * b.experts + 2 * b.experts);
  return doubles * sizeof(double) + static_cast<size_t>(b.tokens * b.experts) * sizeof(float) +
         static_cast<size_t>(b.tokens * b.k) * sizeof(int32_t);
}

}  // namespace moetron::kernels
