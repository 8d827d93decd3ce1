// The host launchers of the CUDA kernels' math (core/kernels/*.h): each runs, on the CPU, the
// per-element or per-row functions the __global__ kernels of core/cuda/kernels.cu run, in the
// same phases, so tests compare the device's math with the CPU backend without a GPU
// (tests/core/test_kernel_math.cc) and, on a GPU, the device's results with these bit for bit.
// Plain host pointers; sizes as the CPU backend's kernels take them.
#pragma once

#include <cstdint>

#include "core/kernels/cross_entropy.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/rope.h"
#include "core/kernels/router.h"

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

}  // namespace moetron::kernels::host
