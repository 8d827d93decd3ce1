// Per-token MoE routing (docs/moe.md), host and device alike: scores (sigmoid, or softmax over
// the experts), the balancing bias for selection only, group-limited top-k with ties to the
// lower index, and the gates from the unbiased scores. The CPU backend runs it a token per
// loop iteration (core/cpu/router.cc), the CUDA kernel a token per thread: the same index path.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

struct RouterShape {
  int64_t experts, k, n_group, topk_group;
  bool softmax, norm_topk_prob;
  float scaling;
};

// Per-token scratch: sel [experts], group_score [n_group], best [max(topk_group, 2)],
// keep [n_group].
struct RouterScratch {
  float* sel;
  float* group_score;
  int32_t* best;
  uint8_t* keep;
};

// Indices of the n largest of v[0..size), largest first, ties to the lower index. Repeated
// selection in the order (value desc, index asc): each pick is the best element that comes
// after the previous pick, so nothing is allocated.
MT_HD void top_n(const float* v, int64_t size, int64_t n, int32_t* out) {
  for (int64_t j = 0; j < n; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < size; ++e) {
      if (j > 0) {
        const int64_t p = out[j - 1];  // e must come after the previous pick
        if (!(v[p] > v[e] || (v[p] == v[e] && p < e))) continue;
      }
      if (best < 0 || v[e] > v[best] || (v[e] == v[best] && e < best)) best = e;
    }
    out[j] = static_cast<int32_t>(best);
  }
}

MT_HD void router_scores(const RouterShape& r, const float* u, float* s) {
  if (r.softmax) {
    float mx = -INFINITY;
    for (int64_t e = 0; e < r.experts; ++e) mx = u[e] > mx ? u[e] : mx;
    float sum = 0;
    for (int64_t e = 0; e < r.experts; ++e) sum += (s[e] = expf(u[e] - mx));
    for (int64_t e = 0; e < r.experts; ++e) s[e] /= sum;
  } else {
    for (int64_t e = 0; e < r.experts; ++e) s[e] = 1.0f / (1.0f + expf(-u[e]));
  }
}

// One token: logits u [experts] -> scores s [experts], chosen experts idx [k], gates g [k].
MT_HD void route_token(const RouterShape& r, const float* u, const float* bias, float* s,
                       int32_t* idx, float* g, const RouterScratch& w) {
  const int64_t E = r.experts, per_group = E / r.n_group;
  router_scores(r, u, s);
  for (int64_t e = 0; e < E; ++e) w.sel[e] = s[e] + bias[e];
  if (r.n_group > 1 && per_group > 0) {  // the config check makes n_group divide experts
    for (int64_t grp = 0; grp < r.n_group; ++grp) {
      const float* gs = w.sel + grp * per_group;
      if (r.softmax) {
        float mx = gs[0];
        for (int64_t e = 1; e < per_group; ++e) mx = gs[e] > mx ? gs[e] : mx;
        w.group_score[grp] = mx;
      } else {
        // The sum of the group's two best (its only one when a group has one expert).
        const int64_t two = per_group < 2 ? per_group : 2;
        top_n(gs, per_group, two, w.best);
        w.group_score[grp] = gs[w.best[0]] + (two == 2 ? gs[w.best[1]] : 0.0f);
      }
    }
    top_n(w.group_score, r.n_group, r.topk_group, w.best);
    for (int64_t grp = 0; grp < r.n_group; ++grp) w.keep[grp] = 0;
    for (int64_t j = 0; j < r.topk_group; ++j) w.keep[w.best[j]] = 1;
    for (int64_t e = 0; e < E; ++e)
      if (!w.keep[e / per_group]) w.sel[e] = -INFINITY;
  }
  top_n(w.sel, E, r.k, idx);
  float sum = 0;
  for (int64_t j = 0; j < r.k; ++j) sum += (g[j] = s[idx[j]]);
  const float norm = r.norm_topk_prob ? r.scaling / (sum + 1e-20f) : r.scaling;
  for (int64_t j = 0; j < r.k; ++j) g[j] *= norm;
}

// The router's backward for token t (the CPU backend's router_backward, its multiply-adds
// explicit fmaf): dscores [experts] += the gates' gradient through the normalisation and
// scaling, then dlogits [experts] += it through the sigmoid or the softmax.
MT_HD void router_backward_token(const RouterShape& r, const float* dgates, const float* scores,
                                 const int32_t* topk_idx, float* dscores, float* dlogits,
                                 int64_t t) {
  const int64_t E = r.experts;
  const float* s = scores + t * E;
  const int32_t* idx = topk_idx + t * r.k;
  const float* dg = dgates + t * r.k;
  float* ds = dscores + t * E;
  if (r.norm_topk_prob) {
    // g_j = c s_j / S with S = sum_i s_i + 1e-20 over the chosen experts.
    float sum = 0.0f, dot = 0.0f;
    for (int64_t j = 0; j < r.k; ++j) sum += s[idx[j]];
    sum += 1e-20f;
    for (int64_t j = 0; j < r.k; ++j) dot = fmaf(dg[j], s[idx[j]], dot);
    for (int64_t j = 0; j < r.k; ++j)
      ds[idx[j]] = fmaf(r.scaling, dg[j] / sum - dot / (sum * sum), ds[idx[j]]);
  } else {
    for (int64_t j = 0; j < r.k; ++j) ds[idx[j]] = fmaf(r.scaling, dg[j], ds[idx[j]]);
  }
  float* du = dlogits + t * E;
  if (r.softmax) {
    float dot = 0.0f;
    for (int64_t e = 0; e < E; ++e) dot = fmaf(ds[e], s[e], dot);
    for (int64_t e = 0; e < E; ++e) du[e] = fmaf(s[e], ds[e] - dot, du[e]);
  } else {
    for (int64_t e = 0; e < E; ++e) du[e] = fmaf(ds[e] * s[e], 1.0f - s[e], du[e]);
  }
}

}  // namespace moetron::kernels
