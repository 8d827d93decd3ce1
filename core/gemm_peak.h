// Measures the machine's GEMM rate with the fastest GEMM moetron links (a large square GEMM on
// all compute threads): the denominator of MFU.
#pragma once

#include <cstdint>
#include <functional>

#include "core/tensor.h"

namespace moetron {

// GFLOP/s of the best of `reps` n x n x n GEMM calls (after one warm-up call), with f32 or bf16
// operands (fp32 accumulation and output either way): the peak of each precision.
double measure_gemm_gflops(int64_t n = 2048, int reps = 5, DType dtype = DType::f32);

// The peak to divide by once `achieved` GFLOP/s were seen against `peak`. More than the peak
// means the probe ran while the machine was busy (a package install, another job): `probe`
// measures again and the larger of the two, and of what was achieved, is the peak from then on,
// so an MFU is never above 100%. Otherwise `peak`, and no probe.
double plausible_peak(double peak, double achieved, const std::function<double()>& probe);

}  // namespace moetron
