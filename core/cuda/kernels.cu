// The CUDA kernels over the shared math of core/kernels/*.h (the host launchers of
// core/kernels/host.cc run the same functions on the CPU). Device pointers; launches on the
// default stream, on which the CUDA backend (core/cuda/backend.cc) orders all its work.
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#include <thrust/functional.h>
#include <thrust/sort.h>

#include <cstddef>

#include "core/cuda/check.cuh"
#include "core/cuda/kernels.h"
#include "core/kernels/attention.h"
#include "core/kernels/balance.h"
#include "core/kernels/copies.h"
#include "core/kernels/cross_entropy.h"
#include "core/kernels/decode.h"
#include "core/kernels/dispatch.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/gated_delta.h"
#include "core/kernels/linear_attention.h"
#include "core/kernels/reduce.h"
#include "core/kernels/rmsnorm.h"
#include "core/kernels/rope.h"
#include "core/kernels/router.h"
#include "core/kernels/rows.h"

namespace moetron::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n, int per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

// Thrust's temporary storage from the stream-ordered pool the backend allocates from (CUDA's
// default pool, which keeps freed blocks) instead of a cudaMalloc and a cudaFree per sort, which
// synchronise the device; and no wait at the end of each sort (par_nosync): the sorts are ordered
// on the default stream with the kernels around them, as every other launch is.
class PoolAllocator {
 public:
  using value_type = char;
  char* allocate(std::ptrdiff_t bytes) {
    void* p = nullptr;
    check(cudaMallocAsync(&p, static_cast<size_t>(bytes), nullptr), "sort's temporary storage");
    return static_cast<char*>(p);
  }
  void deallocate(char* p, size_t) noexcept { cudaFreeAsync(p, nullptr); }
};

// thrust::stable_sort_by_key(args...) on the pool.
template <typename... Args>
void sort_pairs(Args... args) {
  PoolAllocator pool;
  thrust::stable_sort_by_key(thrust::cuda::par_nosync(pool), args...);
}

__global__ void swiglu_forward_kernel(const float* gate_up, float* out, int64_t n, int64_t width) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) kernels::swiglu_forward(gate_up, out, width, i);
}

__global__ void swiglu_backward_kernel(const float* dout, const float* gate_up, float* dgate_up,
                                       int64_t n, int64_t width) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) kernels::swiglu_backward(dout, gate_up, dgate_up, width, i);
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                             kernels::AdamWScalars s) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) kernels::adamw(p, g, m, v, s, i);
}

// The butterflies of core/kernels/warp.h by shuffles.
template <typename Op>
__device__ float butterfly(float v, Op op) {
  for (int o = kernels::kWarp / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ float warp_sum(float v) {
  return butterfly(v, kernels::Sum{});
}
__device__ float warp_max(float v) {
  return butterfly(v, kernels::Max{});
}

// One row per warp.
__global__ void ce_shard_stats_kernel(const float* logits, const int32_t* targets, int64_t rows,
                                      kernels::VocabBlock v, float* stats) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kernels::kWarp;
  const int lane = static_cast<int>(threadIdx.x % kernels::kWarp);
  if (r >= rows) return;  // whole warps leave together
  const float* z = logits + r * v.cols;
  const float mx = warp_max(kernels::ce_lane_max(z, v, lane));
  const float sum = warp_sum(kernels::ce_lane_sum(z, v, mx, lane));
  if (lane == 0) kernels::ce_write_stats(z, targets[r], v, mx, sum, stats + r * 3);
}

__global__ void ce_shard_backward_kernel(float* logits, const int32_t* targets, int64_t n,
                                         kernels::VocabBlock v, const float* lse,
                                         float grad_scale) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) kernels::ce_backward_at(logits, targets, v, lse, grad_scale, i);
}

// One row per warp; the butterfly of core/kernels/warp.h by shuffles.
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float eps, float* y,
                                       float* rstd, int64_t rows, int64_t cols) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kernels::kWarp;
  const int lane = static_cast<int>(threadIdx.x % kernels::kWarp);
  if (r >= rows) return;  // whole warps leave together: rows are warp-aligned
  const float sum = warp_sum(kernels::rmsnorm_partial(x, cols, r, lane));
  const float rs = kernels::rmsnorm_rstd(sum, cols, eps);
  if (lane == 0) rstd[r] = rs;
  kernels::rmsnorm_write(x, w, rs, y, cols, r, lane);
}

__global__ void rope_kernel(float* x, const float* cos, const float* sin, kernels::RopeShape r,
                            int64_t pairs) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < pairs) kernels::rope_at(x, cos, sin, r, p);
}

// A token per thread; scratch holds each token's selection buffers.
__global__ void router_forward_kernel(kernels::RouterShape r, int64_t tokens, const float* logits,
                                      const float* bias, float* scores, int32_t* topk_idx,
                                      float* gates, float* sel, float* group_score, int32_t* best,
                                      uint8_t* keep) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const int64_t best_n = r.topk_group > 2 ? r.topk_group : 2;
  const kernels::RouterScratch w{sel + t * r.experts, group_score + t * r.n_group,
                                 best + t * best_n, keep + t * r.n_group};
  kernels::route_token(r, logits + t * r.experts, bias, scores + t * r.experts, topk_idx + t * r.k,
                       gates + t * r.k, w);
}

// One slot per warp.
__global__ void combine_rows_backward_kernel(const float* dy, const float* src,
                                             const int32_t* slot_row, const float* weights,
                                             int64_t slots, int64_t k, int64_t dim, float* dsrc,
                                             float* dweights) {
  const int64_t slot =
      (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kernels::kWarp;
  const int lane = static_cast<int>(threadIdx.x % kernels::kWarp);
  if (slot >= slots) return;  // whole warps leave together
  const float dot = warp_sum(
      kernels::combine_backward_lane(dy, src, slot_row, weights, k, dim, dsrc, slot, lane));
  if (lane == 0) dweights[slot] = dot;
}

// Backward dx, one row per warp.
__global__ void rmsnorm_backward_dx_kernel(const float* dy, const float* x, const float* w,
                                           const float* rstd, float* dx, bool accumulate,
                                           int64_t rows, int64_t cols) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kernels::kWarp;
  const int lane = static_cast<int>(threadIdx.x % kernels::kWarp);
  if (r >= rows) return;  // whole warps leave together
  const float sum = warp_sum(kernels::rmsnorm_backward_partial(dy, x, w, cols, r, lane));
  kernels::rmsnorm_backward_dx(dy, x, w, rstd[r], sum, dx, accumulate, cols, r, lane);
}

__global__ void rmsnorm_dw_part_kernel(const float* dy, const float* x, const float* rstd,
                                       int64_t rows, int64_t cols, float* part, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) kernels::rmsnorm_dw_part_at(dy, x, rstd, rows, cols, part, i);
}

__global__ void rmsnorm_dw_sum_kernel(const float* part, int64_t parts, int64_t cols, float* dw) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c < cols) kernels::rmsnorm_dw_sum_at(part, parts, cols, dw, c);
}

__global__ void embedding_keys_kernel(const int32_t* ids, int64_t n, int64_t first, int64_t rows,
                                      int32_t* keys, int32_t* order) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  keys[i] = kernels::embedding_row_key(ids, first, rows, i);
  order[i] = static_cast<int32_t>(i);
}

__global__ void embedding_backward_kernel(const int32_t* sorted_rows, const int32_t* order,
                                          int64_t n, const float* dout, int64_t rows, int64_t dim,
                                          float* dtable) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n * dim)
    kernels::embedding_backward_at(sorted_rows, order, n, dout, rows, dim, dtable, i);
}

// A block of kSumSquaresBlock elements per thread, then one thread over the blocks' sums.
__global__ void sum_squares_blocks_kernel(const float* x, int64_t n, int64_t blocks,
                                          double* partial) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < blocks) partial[b] = kernels::sum_squares_block(x, n, b);
}
__global__ void sum_squares_total_kernel(const double* partial, int64_t blocks, double* sum) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *sum += kernels::sum_squares_total(partial, blocks);
}

// The dispatch plan's steps (core/kernels/dispatch.h), a slot or an expert per thread.
__global__ void dispatch_start_kernel(const int32_t* idx, const float* scores, int64_t slots,
                                      int64_t k, int64_t experts, bool by_score, float* score,
                                      int32_t* order) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= slots) return;
  order[i] = static_cast<int32_t>(i);
  if (by_score) score[i] = kernels::dispatch_score(idx, scores, k, experts, i);
}
__global__ void dispatch_gather_experts_kernel(const int32_t* idx, const int32_t* order,
                                               int64_t slots, int32_t* by_expert) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < slots) by_expert[p] = idx[order[p]];
}
__global__ void dispatch_keep_kernel(const int32_t* by_expert, const int32_t* order, int64_t slots,
                                     int64_t capacity, uint8_t* kept) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < slots) kernels::dispatch_keep_at(by_expert, order, slots, capacity, kept, p);
}
__global__ void dispatch_row_keys_kernel(const int32_t* idx, const uint8_t* kept, int64_t slots,
                                         int64_t experts, int32_t* key, int32_t* row_order) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= slots) return;
  key[i] = kernels::dispatch_row_key(idx, kept, experts, i);
  row_order[i] = static_cast<int32_t>(i);
}
__global__ void dispatch_offsets_kernel(const int32_t* by_expert, const int32_t* row_key,
                                        int64_t slots, int64_t experts, int64_t* counts,
                                        int64_t* offsets, int64_t* rows_dropped) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e > experts) return;
  kernels::dispatch_offsets_at(by_expert, row_key, slots, experts, counts, offsets, e);
  if (e == experts) {
    rows_dropped[0] = offsets[experts];
    rows_dropped[1] = slots - offsets[experts];
  }
}
__global__ void dispatch_rows_kernel(const int32_t* row_order, const int64_t* offsets,
                                     int64_t slots, int64_t experts, int64_t k, int32_t* row_token,
                                     int32_t* slot_row) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < slots) kernels::dispatch_rows_at(row_order, offsets, experts, k, row_token, slot_row, p);
}

// f(i) for i in [0, n), a thread per i (f a __device__ lambda, nvcc's --extended-lambda).
template <typename F>
__global__ void each_kernel(int64_t n, F f) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) f(i);
}
template <typename F>
void each(int64_t n, F f, const char* what) {
  if (n <= 0) return;
  each_kernel<<<blocks_for(n, kThreads), kThreads>>>(n, f);
  check_launch(what);
}

}  // namespace

using namespace kernels;  // the shared math's names, as the host launchers call them

#define MT_LAMBDA __device__
#include "core/kernels/each_launchers.inc"

void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights) {
  const int64_t slots = tokens * k;
  if (slots == 0) return;
  const int slots_per_block = kThreads / kernels::kWarp;
  combine_rows_backward_kernel<<<blocks_for(slots, slots_per_block), kThreads>>>(
      dy, src, slot_row, weights, slots, k, dim, dsrc, dweights);
  check_launch("combine_rows_backward");
}

size_t rmsnorm_backward_scratch_bytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>(kernels::rmsnorm_parts(rows) * cols) * sizeof(float);
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols, void* scratch) {
  if (rows == 0 || cols == 0) return;
  const int rows_per_block = kThreads / kernels::kWarp;
  rmsnorm_backward_dx_kernel<<<blocks_for(rows, rows_per_block), kThreads>>>(
      dy, x, w, rstd, dx, accumulate_dx, rows, cols);
  check_launch("rmsnorm_backward dx");
  const int64_t parts = kernels::rmsnorm_parts(rows), n = parts * cols;
  auto* part = static_cast<float*>(scratch);
  rmsnorm_dw_part_kernel<<<blocks_for(n, kThreads), kThreads>>>(dy, x, rstd, rows, cols, part, n);
  check_launch("rmsnorm_backward dw parts");
  rmsnorm_dw_sum_kernel<<<blocks_for(cols, kThreads), kThreads>>>(part, parts, cols, dw);
  check_launch("rmsnorm_backward dw");
}

size_t embedding_backward_scratch_bytes(int64_t n) {
  return static_cast<size_t>(2 * n) * sizeof(int32_t);
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows, void* scratch) {
  if (n == 0 || dim == 0) return;
  auto* keys = static_cast<int32_t*>(scratch);
  int32_t* order = keys + n;
  embedding_keys_kernel<<<blocks_for(n, kThreads), kThreads>>>(ids, n, first, rows, keys, order);
  check_launch("embedding_backward keys");
  // Stable, so equal rows keep token order: the sum's order is the CPU's.
  sort_pairs(keys, keys + n, order);
  check_launch("embedding_backward sort");
  embedding_backward_kernel<<<blocks_for(n * dim, kThreads), kThreads>>>(keys, order, n, dout, rows,
                                                                         dim, dtable);
  check_launch("embedding_backward");
}

size_t sum_squares_scratch_bytes(int64_t n) {
  return static_cast<size_t>(kernels::sum_squares_blocks(n)) * sizeof(double);
}

void sum_squares(const float* x, int64_t n, double* sum, void* scratch) {
  if (n == 0) return;
  const int64_t blocks = kernels::sum_squares_blocks(n);
  auto* partial = static_cast<double*>(scratch);
  sum_squares_blocks_kernel<<<blocks_for(blocks, kThreads), kThreads>>>(x, n, blocks, partial);
  check_launch("sum_squares blocks");
  sum_squares_total_kernel<<<1, 1>>>(partial, blocks, sum);
  check_launch("sum_squares total");
}

size_t plan_dispatch_scratch_bytes(int64_t slots) {
  // order, by_expert, key, row_order (i32), score (f32), kept (u8)
  return static_cast<size_t>(slots) * (5 * sizeof(int32_t) + 1);
}

void plan_dispatch(const int32_t* idx, const float* scores, int64_t n, int64_t k, int64_t experts,
                   int64_t capacity, int64_t* counts, int64_t* offsets, int32_t* row_token,
                   int32_t* slot_row, int64_t* rows_dropped, void* scratch) {
  const int64_t slots = n * k;
  auto* order = static_cast<int32_t*>(scratch);
  int32_t* by_expert = order + slots;
  int32_t* key = by_expert + slots;
  int32_t* row_order = key + slots;
  auto* score = reinterpret_cast<float*>(row_order + slots);
  auto* kept = reinterpret_cast<uint8_t*>(score + slots);
  const unsigned slot_blocks = blocks_for(slots > 0 ? slots : 1, kThreads);
  if (slots > 0) {
    dispatch_start_kernel<<<slot_blocks, kThreads>>>(idx, scores, slots, k, experts, capacity > 0,
                                                     score, order);
    check_launch("plan_dispatch start");
    if (capacity > 0)  // step 1: best first; stable, so ties keep slot order
      sort_pairs(score, score + slots, order, thrust::greater<float>());
    dispatch_gather_experts_kernel<<<slot_blocks, kThreads>>>(idx, order, slots, by_expert);
    check_launch("plan_dispatch gather experts");
    sort_pairs(by_expert, by_expert + slots, order);  // step 2
    dispatch_keep_kernel<<<slot_blocks, kThreads>>>(by_expert, order, slots, capacity, kept);
    check_launch("plan_dispatch keep");
    dispatch_row_keys_kernel<<<slot_blocks, kThreads>>>(idx, kept, slots, experts, key, row_order);
    check_launch("plan_dispatch row keys");
    sort_pairs(key, key + slots, row_order);  // step 3
    check_launch("plan_dispatch sorts");
  }
  dispatch_offsets_kernel<<<blocks_for(experts + 1, kThreads), kThreads>>>(
      by_expert, key, slots, experts, counts, offsets, rows_dropped);
  check_launch("plan_dispatch offsets");
  if (slots > 0) {
    dispatch_rows_kernel<<<slot_blocks, kThreads>>>(row_order, offsets, slots, experts, k,
                                                    row_token, slot_row);
    check_launch("plan_dispatch rows");
  }
}

size_t router_scratch_bytes(const kernels::RouterShape& r, int64_t tokens) {
  const int64_t best_n = r.topk_group > 2 ? r.topk_group : 2;
  return static_cast<size_t>(tokens) *
         (static_cast<size_t>(r.experts + r.n_group) * sizeof(float) +
          static_cast<size_t>(best_n) * sizeof(int32_t) + static_cast<size_t>(r.n_group));
}

void router_forward(const kernels::RouterShape& r, int64_t tokens, const float* logits,
                    const float* bias, float* scores, int32_t* topk_idx, float* gates,
                    void* scratch) {
  if (tokens == 0) return;
  const int64_t best_n = r.topk_group > 2 ? r.topk_group : 2;
  auto* sel = static_cast<float*>(scratch);
  float* group_score = sel + tokens * r.experts;
  auto* best = reinterpret_cast<int32_t*>(group_score + tokens * r.n_group);
  auto* keep = reinterpret_cast<uint8_t*>(best + tokens * best_n);
  constexpr int threads = 128;
  router_forward_kernel<<<blocks_for(tokens, threads), threads>>>(
      r, tokens, logits, bias, scores, topk_idx, gates, sel, group_score, best, keep);
  check_launch("router_forward");
}

void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows,
                    const kernels::VocabBlock& v, float* stats) {
  if (rows == 0) return;
  const int rows_per_block = kThreads / kernels::kWarp;
  ce_shard_stats_kernel<<<blocks_for(rows, rows_per_block), kThreads>>>(logits, targets, rows, v,
                                                                        stats);
  check_launch("ce_shard_stats");
}

void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows,
                       const kernels::VocabBlock& v, const float* lse, float grad_scale) {
  const int64_t n = rows * v.cols;
  if (n == 0) return;
  ce_shard_backward_kernel<<<blocks_for(n, kThreads), kThreads>>>(logits, targets, n, v, lse,
                                                                  grad_scale);
  check_launch("ce_shard_backward");
}

void rope(float* x, const float* cos, const float* sin, int64_t batch,
          const kernels::RopeShape& r) {
  const int64_t pairs = batch * r.seq * r.heads * r.half;
  if (pairs == 0) return;
  rope_kernel<<<blocks_for(pairs, kThreads), kThreads>>>(x, cos, sin, r, pairs);
  check_launch("rope");
}

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width) {
  const int64_t n = rows * width;
  if (n == 0) return;
  swiglu_forward_kernel<<<blocks_for(n, kThreads), kThreads>>>(gate_up, out, n, width);
  check_launch("swiglu_forward");
}

void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width) {
  const int64_t n = rows * width;
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n, kThreads), kThreads>>>(dout, gate_up, dgate_up, n, width);
  check_launch("swiglu_backward");
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n,
           const kernels::AdamWScalars& s) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, kThreads), kThreads>>>(p, g, m, v, n, s);
  check_launch("adamw");
}

void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols) {
  if (rows == 0) return;
  const int rows_per_block = kThreads / kernels::kWarp;
  rmsnorm_forward_kernel<<<blocks_for(rows, rows_per_block), kThreads>>>(x, w, eps, y, rstd, rows,
                                                                         cols);
  check_launch("rmsnorm_forward");
}

}  // namespace moetron::cuda
