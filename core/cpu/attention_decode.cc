// Attention of a few new queries over a KV cache whose keys are stored transposed ([KV, hd,
// max_len]): the scores of one query against every cached key are then hd fused multiply-adds
// vectorised across positions, each score one chain over the head dimension in order. Then the
// training kernel's fast_exp, a fixed-order sum and fused multiply-adds over the values: one
// (query, head) gives the same bits whatever chunk it came in, and on any thread.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu/fast_math.h"
#include "core/cpu/fixed_order.h"
#include "core/cpu/kernels_decode.h"

namespace moetron::cpu {

void attention_decode(const DecodeAttentionShape& s, const float* q, const float* k_t,
                      const float* v, float* out) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads, kv_ld = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t tasks = s.queries * s.heads, keys = s.start + s.queries;
  // One token over a short cache is a few microseconds: threads would cost more than they save.
  auto run = [&](int64_t task, std::vector<float>& scores) {
    const int64_t i = task / s.heads, h = task % s.heads, kvh = h / group;
    const int64_t valid = s.start + i + 1;
    const float* qi = q + task * hd;
    const float* kh = k_t + kvh * hd * s.max_len;
    if (scores.size() < static_cast<size_t>(valid)) scores.resize(static_cast<size_t>(valid));
    float* sc = scores.data();
    std::fill(sc, sc + valid, 0.0f);
    for (int64_t c = 0; c < hd; ++c) axpy_fixed(qi[c], kh + c * s.max_len, sc, valid);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < valid; ++j) {
      sc[j] *= scale;
      mx = std::max(mx, sc[j]);
    }
    for (int64_t j = 0; j < valid; ++j) sc[j] = fast_exp(sc[j] - mx);
    const float inv = 1.0f / sum_fixed(sc, valid);
    float* oi = out + task * hd;
    std::fill(oi, oi + hd, 0.0f);
    for (int64_t j = 0; j < valid; ++j) axpy_fixed(sc[j] * inv, v + j * kv_ld + kvh * hd, oi, hd);
  };
  // One token over a short cache is a few microseconds: threads would cost more than they save.
  if (tasks * keys * hd < (int64_t{1} << 17)) {
    thread_local std::vector<float> scores;
    for (int64_t task = 0; task < tasks; ++task) run(task, scores);
    return;
  }
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(keys));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) run(task, scores);
  }
}

void attention_decode_latent(const LatentAttentionShape& s, const float* q, const float* cache,
                             float* out) {
  // Each (head, query): scores one fixed-order dot per cached row, then attention_decode's
  // softmax and value sum over the rows' first dv columns.
  const int64_t tasks = s.heads * s.queries, keys = s.start + s.queries;
  auto run = [&](int64_t task, std::vector<float>& scores) {
    const int64_t i = task % s.queries;
    const int64_t valid = s.start + i + 1;
    const float* qi = q + task * s.dk;
    if (scores.size() < static_cast<size_t>(valid)) scores.resize(static_cast<size_t>(valid));
    float* sc = scores.data();
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < valid; ++j) {
      sc[j] = dot_fixed(qi, cache + j * s.dk, s.dk) * s.scale;
      mx = std::max(mx, sc[j]);
    }
    for (int64_t j = 0; j < valid; ++j) sc[j] = fast_exp(sc[j] - mx);
    const float inv = 1.0f / sum_fixed(sc, valid);
    float* oi = out + task * s.dv;
    std::fill(oi, oi + s.dv, 0.0f);
    for (int64_t j = 0; j < valid; ++j) axpy_fixed(sc[j] * inv, cache + j * s.dk, oi, s.dv);
  };
  if (tasks * keys * s.dk < (int64_t{1} << 17)) {
    thread_local std::vector<float> scores;
    for (int64_t task = 0; task < tasks; ++task) run(task, scores);
    return;
  }
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(keys));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) run(task, scores);
  }
}

void store_keys(const float* k, int64_t n, int64_t kv_heads, int64_t head_dim, int64_t start,
                int64_t max_len, float* k_t) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t c = 0; c < head_dim; ++c)
        k_t[(h * head_dim + c) * max_len + start + i] = k[(i * kv_heads + h) * head_dim + c];
}

}  // namespace moetron::cpu
