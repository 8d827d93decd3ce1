// The host launchers of the CUDA kernels' math (core/kernels/*.h): each runs, on the CPU, the
// per-element or per-row functions the __global__ kernels of core/cuda/kernels.cu run, in the
// same phases, so tests compare the device's math with the CPU backend without a GPU
// (tests/core/test_kernel_math.cc) and, on a GPU, the device's results with these bit for bit.
// Plain host pointers; sizes as the CPU backend's kernels take them.
#pragma once

#include <cstddef>
#include <cstdint>

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
#include "core/kernels/rope.h"
#include "core/kernels/router.h"
#include "core/kernels/rows.h"

namespace moetron::kernels::host {

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width);
void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width);
void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s);
// Pair by pair, as the kernel's threads (the CPU backend's rope loops by row over the same
// rope_pair).
void rope(float* x, const float* cos, const float* sin, int64_t batch, const RopeShape& r);
// A token per iteration (OpenMP over tokens); the CPU backend's router is this function.
void router_forward(const RouterShape& r, int64_t tokens, const float* logits, const float* bias,
                    float* scores, int32_t* topk_idx, float* gates);
// logits [rows, v.cols], targets [rows]; stats [rows, 3]; lse [rows].
void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows, const VocabBlock& v,
                    float* stats);
void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows, const VocabBlock& v,
                       const float* lse, float grad_scale);
void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols);

// core/kernels/rows.h: the combine's backward (src [R, dim], dy [tokens, dim]; slot_row and
// weights [tokens, k]).
void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights);
// RMSNorm's backward: dx overwritten or added, dw added to (dw [cols]).
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols);
// The embedding's gradient added into dtable [rows, dim], this rank's block [first, first +
// rows) of the vocabulary (core/kernels/rows.h: sorted, deterministic).
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows);
// sum[0] += the sum of squares of x [n] in double (core/kernels/reduce.h).
void sum_squares(const float* x, int64_t n, double* sum);
// The dispatch plan (core/kernels/dispatch.h) of topk_idx [n, k] with scores [n, experts]:
// counts [experts], offsets [experts + 1], row_token [n k] (the first *rows meant), slot_row
// [n k]; *rows kept, *dropped by the capacity (0: none).
void plan_dispatch(const int32_t* idx, const float* scores, int64_t n, int64_t k, int64_t experts,
                   int64_t capacity, int64_t* counts, int64_t* offsets, int32_t* row_token,
                   int32_t* slot_row, int64_t* rows, int64_t* dropped);
// The launchers of core/kernels/each_launchers.inc (a thread per item), declared alike on both
// sides.
#include "core/kernels/each_launchers.h.inc"

// The CUDA launchers' signatures (core/cuda/kernels.h) for the launchers above that take device
// scratch, so that one backend text drives both sides (core/kernels/device_backend.inc). The
// host needs no scratch: it asks for none and ignores what it is given.
inline size_t router_scratch_bytes(const RouterShape&, int64_t) {
  return 0;
}
inline void router_forward(const RouterShape& r, int64_t tokens, const float* logits,
                           const float* bias, float* scores, int32_t* topk_idx, float* gates,
                           void* /*scratch*/) {
  router_forward(r, tokens, logits, bias, scores, topk_idx, gates);
}
inline size_t rmsnorm_backward_scratch_bytes(int64_t, int64_t) {
  return 0;
}
inline void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                             float* dx, float* dw, bool accumulate_dx, int64_t rows, int64_t cols,
                             void* /*scratch*/) {
  rmsnorm_backward(dy, x, w, rstd, dx, dw, accumulate_dx, rows, cols);
}
inline size_t embedding_backward_scratch_bytes(int64_t) {
  return 0;
}
inline void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                               float* dtable, int64_t first, int64_t rows, void* /*scratch*/) {
  embedding_backward(ids, n, dout, dim, dtable, first, rows);
}
inline size_t sum_squares_scratch_bytes(int64_t) {
  return 0;
}
inline void sum_squares(const float* x, int64_t n, double* sum, void* /*scratch*/) {
  sum_squares(x, n, sum);
}
inline size_t plan_dispatch_scratch_bytes(int64_t) {
  return 0;
}
// rows_dropped [2]: the kept rows and the dropped slots, as the device writes them.
inline void plan_dispatch(const int32_t* idx, const float* scores, int64_t n, int64_t k,
                          int64_t experts, int64_t capacity, int64_t* counts, int64_t* offsets,
                          int32_t* row_token, int32_t* slot_row, int64_t* rows_dropped,
                          void* /*scratch*/) {
  plan_dispatch(idx, scores, n, k, experts, capacity, counts, offsets, row_token, slot_row,
                rows_dropped, rows_dropped + 1);
}

}  // namespace moetron::kernels::host
