// Measures the machine's fp32 GEMM rate with the fastest GEMM moetron links (a large square
// sgemm on all compute threads): the denominator of MFU.
#pragma once

#include <cstdint>

namespace moetron {

// GFLOP/s of the best of `reps` n x n x n sgemm calls (after one warm-up call).
double measure_gemm_gflops(int64_t n = 2048, int reps = 5);

}  // namespace moetron
