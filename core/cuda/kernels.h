// The CUDA kernels over core/kernels/*.h's shared math, on device pointers (the host launchers
// of core/kernels/host.h run the same math on the CPU). No CUDA header needed to call them.
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

namespace moetron::cuda {

void swiglu_forward(const float* gate_up, float* out, int64_t rows, int64_t width);
void swiglu_backward(const float* dout, const float* gate_up, float* dgate_up, int64_t rows,
                     int64_t width);
void adamw(float* p, const float* g, float* m, float* v, int64_t n, const kernels::AdamWScalars& s);
// The vocabulary-parallel cross-entropy's pieces (core/ops.h), targets on the device.
void ce_shard_stats(const float* logits, const int32_t* targets, int64_t rows,
                    const kernels::VocabBlock& v, float* stats);
void ce_shard_backward(float* logits, const int32_t* targets, int64_t rows,
                       const kernels::VocabBlock& v, const float* lse, float grad_scale);
// RoPE in place on x [batch, seq, heads, head_dim] (cos, sin [seq, head_dim / 2]).
void rope(float* x, const float* cos, const float* sin, int64_t batch, const kernels::RopeShape& r);
// The router of core/kernels/router.h, a token per thread; scratch: router_scratch_bytes of
// device memory (4-byte aligned) that the caller keeps, so a step neither allocates nor waits.
size_t router_scratch_bytes(const kernels::RouterShape& r, int64_t tokens);
void router_forward(const kernels::RouterShape& r, int64_t tokens, const float* logits,
                    const float* bias, float* scores, int32_t* topk_idx, float* gates,
                    void* scratch);
void rmsnorm_forward(const float* x, const float* w, float eps, float* y, float* rstd, int64_t rows,
                     int64_t cols);

// core/kernels/rows.h: the combine's backward (src [R, dim], dy [tokens, dim]; slot_row and
// weights [tokens, k]).
void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights);
// RMSNorm's backward; scratch: rmsnorm_backward_scratch_bytes of device memory (4-byte
// aligned) for the weight gradient's parts.
size_t rmsnorm_backward_scratch_bytes(int64_t rows, int64_t cols);
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, bool accumulate_dx, int64_t rows, int64_t cols, void* scratch);
// The embedding's gradient; scratch: embedding_backward_scratch_bytes (the sorted keys and
// order). The stable sort is Thrust's, which allocates its own temporary memory for now.
size_t embedding_backward_scratch_bytes(int64_t n);
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows, void* scratch);
// sum[0] += the sum of squares of x [n] in double (core/kernels/reduce.h), sum on the device;
// scratch: sum_squares_scratch_bytes (8-byte aligned) for the blocks' sums.
size_t sum_squares_scratch_bytes(int64_t n);
void sum_squares(const float* x, int64_t n, double* sum, void* scratch);
// The dispatch plan (core/kernels/dispatch.h), every array on the device, rows_dropped [2]
// (kept rows, dropped slots) too: the backend copies those two to the host, the one
// device-to-host copy of a MoE layer. scratch: plan_dispatch_scratch_bytes (4-byte aligned).
// The stable sorts are Thrust's, which allocate their own temporary memory for now.
size_t plan_dispatch_scratch_bytes(int64_t slots);
void plan_dispatch(const int32_t* idx, const float* scores, int64_t n, int64_t k, int64_t experts,
                   int64_t capacity, int64_t* counts, int64_t* offsets, int32_t* row_token,
                   int32_t* slot_row, int64_t* rows_dropped, void* scratch);
// The launchers of core/kernels/each_launchers.inc (a thread per item), declared alike on both
// sides.
#include "core/kernels/each_launchers.h.inc"

}  // namespace moetron::cuda
