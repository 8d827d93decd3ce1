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
namespace {

// Scores sc[0, valid) (scaled) become softmax weights, and out [dv] = sum_j p_j value_row(j), in
// fixed order: fast_exp, a fixed-order sum, fused multiply-adds over the rows.
template <typename ValueRow>
void softmax_and_sum(float* sc, int64_t valid, const ValueRow& value_row, float* out, int64_t dv) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, sc[j]);
  for (int64_t j = 0; j < valid; ++j) sc[j] = fast_exp(sc[j] - mx);
  const float inv = 1.0f / sum_fixed(sc, valid);
  std::fill(out, out + dv, 0.0f);
  for (int64_t j = 0; j < valid; ++j) axpy_fixed(sc[j] * inv, value_row(j), out, dv);
}

// task(t, scores) for every t < tasks, each with a scores buffer of up to `keys`: on this thread
// when the work is small (one token over a short cache is a few microseconds: threads would
// cost more than they save), else over the threads in a fixed static split.
template <typename Task>
void run_tasks(int64_t tasks, int64_t keys, int64_t work, const Task& task) {
  if (work < (int64_t{1} << 17)) {
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(keys)) scores.resize(static_cast<size_t>(keys));
    for (int64_t t = 0; t < tasks; ++t) task(t, scores.data());
    return;
  }
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(keys));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) task(t, scores.data());
  }
}

}  // namespace

void attention_decode(const DecodeAttentionShape& s, const float* q, const float* k_t,
                      const float* v, float* out) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads, kv_ld = s.kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t tasks = s.queries * s.heads, keys = s.start + s.queries;
  run_tasks(tasks, keys, tasks * keys * hd, [&](int64_t task, float* sc) {
    const int64_t i = task / s.heads, h = task % s.heads, kvh = h / group;
    const int64_t valid = s.start + i + 1;
    const float* qi = q + task * hd;
    const float* kh = k_t + kvh * hd * s.max_len;
    std::fill(sc, sc + valid, 0.0f);
    for (int64_t c = 0; c < hd; ++c) axpy_fixed(qi[c], kh + c * s.max_len, sc, valid);
    for (int64_t j = 0; j < valid; ++j) sc[j] *= scale;
    softmax_and_sum(
        sc, valid, [&](int64_t j) { return v + j * kv_ld + kvh * hd; }, out + task * hd, hd);
  });
}

void attention_decode_latent(const LatentAttentionShape& s, const float* q, const float* cache,
                             float* out) {
  // Each (head, query): one fixed-order dot per cached row, then the softmax and the sum over
  // the rows' first dv columns.
  const int64_t tasks = s.heads * s.queries, keys = s.start + s.queries;
  run_tasks(tasks, keys, tasks * keys * s.dk, [&](int64_t task, float* sc) {
    const int64_t valid = s.start + task % s.queries + 1;
    const float* qi = q + task * s.dk;
    for (int64_t j = 0; j < valid; ++j) sc[j] = dot_fixed(qi, cache + j * s.dk, s.dk) * s.scale;
    softmax_and_sum(
        sc, valid, [&](int64_t j) { return cache + j * s.dk; }, out + task * s.dv, s.dv);
  });
}

void store_keys(const float* k, int64_t n, int64_t kv_heads, int64_t head_dim, int64_t start,
                int64_t max_len, float* k_t) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t c = 0; c < head_dim; ++c)
        k_t[(h * head_dim + c) * max_len + start + i] = k[(i * kv_heads + h) * head_dim + c];
}

}  // namespace moetron::cpu
