#include "core/kernels/host.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "core/kernels/balance.h"
#include "core/kernels/copies.h"
#include "core/kernels/dispatch.h"
#include "core/kernels/rmsnorm.h"
#include "core/kernels/rows.h"

namespace moetron::kernels::host {
namespace {

// f(i) for i in [0, n), OpenMP over fixed static chunks (each i writes only its own outputs).
// `what` names the launch in the device's errors. Every launch here runs its tasks from the last
// to the first: a GPU runs them in no order, so a task that read what another task of the same
// launch writes (a thread 0 that sets up what the rest read, a running sum) would pass in index
// order on the host and race on the device; in reverse it fails in CI.
template <typename F>
void each(int64_t n, F f, const char* /*what*/) {
#pragma omp parallel for schedule(static)
  for (int64_t i = n - 1; i >= 0; --i) f(i);
}

}  // namespace

#define MT_LAMBDA

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t i = rows * width - 1; i >= 0; --i) kernels::swiglu_forward(gate_up, out, width, i);
}

void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t i = rows * width - 1; i >= 0; --i)
    kernels::swiglu_backward(dout, gate_up, dgate_up, width, i);
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
#pragma omp parallel for schedule(static)
  for (int64_t i = n - 1; i >= 0; --i) kernels::adamw(p, g, m, v, s, i);
}

void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows, const VocabBlock& v,
                    float* stats) {
#pragma omp parallel for schedule(static)
  for (int64_t r = rows - 1; r >= 0; --r) {
    const float* z = logits + r * v.cols;
    float lanes[kWarp];
    for (int lane = 0; lane < kWarp; ++lane) lanes[lane] = ce_lane_max(z, v, lane);
    host_butterfly(lanes, Max{});
    const float mx = lanes[0];
    for (int lane = 0; lane < kWarp; ++lane) lanes[lane] = ce_lane_sum(z, v, mx, lane);
    host_butterfly(lanes, Sum{});
    ce_write_stats(z, targets[r], v, mx, lanes[0], stats + r * 3);
  }
}

void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows, const VocabBlock& v,
                       const float* lse, float grad_scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = rows * v.cols - 1; i >= 0; --i)
    ce_backward_at(logits, targets, v, lse, grad_scale, i);
}

void rope(float* x, const float* cos, const float* sin, int64_t batch, const RopeShape& r) {
  const int64_t pairs = batch * r.seq * r.heads * r.half;
#pragma omp parallel for schedule(static)
  for (int64_t p = pairs - 1; p >= 0; --p) rope_at(x, cos, sin, r, p);
}

void router_forward(const RouterShape& r, int64_t tokens, const float* logits, const float* bias,
                    float* scores, int32_t* topk_idx, float* gates) {
#pragma omp parallel
  {
    std::vector<float> sel(static_cast<size_t>(r.experts));
    std::vector<float> group_score(static_cast<size_t>(r.n_group));
    std::vector<int32_t> best(static_cast<size_t>(std::max(r.topk_group, int64_t{2})));
    std::vector<uint8_t> keep(static_cast<size_t>(r.n_group));
    const RouterScratch scratch{sel.data(), group_score.data(), best.data(), keep.data()};
#pragma omp for schedule(static)
    for (int64_t t = tokens - 1; t >= 0; --t)
      route_token(r, logits + t * r.experts, bias, scores + t * r.experts, topk_idx + t * r.k,
                  gates + t * r.k, scratch);
  }
}

void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = rows - 1; r >= 0; --r) {
    float sums[kWarp];
    for (int lane = 0; lane < kWarp; ++lane) sums[lane] = rmsnorm_partial(x, cols, r, lane);
    host_butterfly(sums, Sum{});
    const float rs = rmsnorm_rstd(sums[0], cols, eps);
    rstd[r] = rs;
    for (int lane = 0; lane < kWarp; ++lane) rmsnorm_write(x, w, rs, y, cols, r, lane);
  }
}

void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights) {
#pragma omp parallel for schedule(static)
  for (int64_t slot = tokens * k - 1; slot >= 0; --slot) {
    float lanes[kWarp];
    for (int lane = 0; lane < kWarp; ++lane)
      lanes[lane] = combine_backward_lane(dy, src, slot_row, weights, k, dim, dsrc, slot, lane);
    host_butterfly(lanes, Sum{});
    dweights[slot] = lanes[0];
  }
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = rows - 1; r >= 0; --r) {
    float sums[kWarp];
    for (int lane = 0; lane < kWarp; ++lane)
      sums[lane] = rmsnorm_backward_partial(dy, x, w, cols, r, lane);
    host_butterfly(sums, Sum{});
    for (int lane = 0; lane < kWarp; ++lane)
      rmsnorm_backward_dx(dy, x, w, rstd[r], sums[0], dx, accumulate_dx, cols, r, lane);
  }
  const int64_t parts = rmsnorm_parts(rows);
  std::vector<float> part(static_cast<size_t>(parts * cols));
#pragma omp parallel for schedule(static)
  for (int64_t i = parts * cols - 1; i >= 0; --i)
    rmsnorm_dw_part_at(dy, x, rstd, rows, cols, part.data(), i);
  for (int64_t c = cols - 1; c >= 0; --c) rmsnorm_dw_sum_at(part.data(), parts, cols, dw, c);
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows) {
  std::vector<int32_t> keys(static_cast<size_t>(n)), order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = embedding_row_key(ids, first, rows, i);
    order[i] = static_cast<int32_t>(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  std::vector<int32_t> sorted(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) sorted[p] = keys[order[p]];
#pragma omp parallel for schedule(static)
  for (int64_t i = n * dim - 1; i >= 0; --i)
    embedding_backward_at(sorted.data(), order.data(), n, dout, rows, dim, dtable, i);
}

void sum_squares(const float* x, int64_t n, double* sum) {
  const int64_t blocks = sum_squares_blocks(n);
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static)
  for (int64_t b = blocks - 1; b >= 0; --b) partial[b] = sum_squares_block(x, n, b);
  *sum += sum_squares_total(partial.data(), blocks);
}

void plan_dispatch(const int32_t* idx, const float* scores, int64_t n, int64_t k, int64_t experts,
                   int64_t capacity, int64_t* counts, int64_t* offsets, int32_t* row_token,
                   int32_t* slot_row, int64_t* rows, int64_t* dropped) {
  const int64_t slots = n * k;
  const auto sorted_by = [](std::vector<int32_t>& order, const auto& before) {
    std::stable_sort(order.begin(), order.end(), before);
  };
  std::vector<int32_t> order(static_cast<size_t>(slots));
  std::iota(order.begin(), order.end(), 0);
  if (capacity > 0) {  // step 1
    std::vector<float> score(static_cast<size_t>(slots));
    for (int64_t i = slots - 1; i >= 0; --i) score[i] = dispatch_score(idx, scores, k, experts, i);
    sorted_by(order, [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  }
  sorted_by(order, [&](int32_t a, int32_t b) { return idx[a] < idx[b]; });  // step 2
  std::vector<int32_t> by_expert(static_cast<size_t>(slots));
  for (int64_t p = 0; p < slots; ++p) by_expert[p] = idx[order[p]];
  std::vector<uint8_t> kept(static_cast<size_t>(slots));
#pragma omp parallel for schedule(static)
  for (int64_t p = slots - 1; p >= 0; --p)
    dispatch_keep_at(by_expert.data(), order.data(), slots, capacity, kept.data(), p);
  std::vector<int32_t> key(static_cast<size_t>(slots)), row_order(static_cast<size_t>(slots));
  for (int64_t i = slots - 1; i >= 0; --i) key[i] = dispatch_row_key(idx, kept.data(), experts, i);
  std::iota(row_order.begin(), row_order.end(), 0);
  sorted_by(row_order, [&](int32_t a, int32_t b) { return key[a] < key[b]; });  // step 3
  std::vector<int32_t> row_key(static_cast<size_t>(slots));
  for (int64_t p = 0; p < slots; ++p) row_key[p] = key[row_order[p]];
  for (int64_t e = experts; e >= 0; --e)
    dispatch_offsets_at(by_expert.data(), row_key.data(), slots, experts, counts, offsets, e);
#pragma omp parallel for schedule(static)
  for (int64_t p = slots - 1; p >= 0; --p)
    dispatch_rows_at(row_order.data(), offsets, experts, k, row_token, slot_row, p);
  *rows = offsets[experts];
  *dropped = slots - *rows;
}

// The launchers of one thread per item, shared with core/cuda/kernels.cu.
#include "core/kernels/each_launchers.inc"

}  // namespace moetron::kernels::host
