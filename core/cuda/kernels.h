// The CUDA kernels over core/kernels/*.h's shared math, on device pointers (the host launchers
// of core/kernels/host.h run the same math on the CPU). No CUDA header needed to call them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/kernels/cross_entropy.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/rope.h"
#include "core/kernels/router.h"

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

}  // namespace moetron::cuda
