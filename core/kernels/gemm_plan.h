// How moetron's row-major products map onto a column-major GEMM (cuBLAS / cuBLASLt), decided
// on the host and tested on the CPU: the CUDA backend hands a plan's fields to the library as
// they are. A row-major [r, c] matrix is, byte for byte, the column-major [c, r] matrix, so
//   C = alpha op(A) op(B) + beta C   (row-major)   is   C^T = alpha op(B)^T op(A)^T + beta C^T,
// a column-major GEMM whose first operand is our B and second our A, each with its own flag.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moetron::kernels {

// A column-major GEMM as cuBLAS defines it: C [m, n] (ldc) = alpha op(first) [m, k] op(second)
// [k, n] + beta C, op = transpose when the flag is set (CUBLAS_OP_T), first stored [m, k] or
// [k, m] column-major with leading dimension ld_first, likewise second.
struct GemmPlan {
  int64_t m = 0, n = 0, k = 0;
  bool trans_first = false, trans_second = false;
  int64_t ld_first = 0, ld_second = 0, ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
};

// The plan of c [rows, cols] = alpha op(a) op(b) + beta c for row-major a [a_rows, a_cols] and b
// [b_rows, b_cols] (contiguous): first operand b, second a.
GemmPlan plan_matmul(int64_t a_rows, int64_t a_cols, bool trans_a, int64_t b_rows, int64_t b_cols,
                     bool trans_b, float alpha = 1.0f, float beta = 0.0f);

// The grouped expert GEMM y[rows of e] = x[rows of e] w_e^T (x [R, in], w_e [out, in], y [R,
// out]) as one plan per expert with rows (offsets [E + 1], on the host: the one copy per MoE
// layer), and where each expert's rows start in x and y. Empty experts have no plan, so a
// library call is never made with m, n or k zero.
struct GroupedGemm {
  std::vector<GemmPlan> plans;
  std::vector<int64_t> experts;               // the expert of each plan
  std::vector<int64_t> x_offsets, y_offsets;  // element offsets of its first row
};
GroupedGemm plan_grouped(std::span<const int64_t> offsets, int64_t in, int64_t out);

// cuBLAS's column-major GEMM, on the host: the reference that tests a plan on the CPU.
void host_gemm(const GemmPlan& p, const float* first, const float* second, float* c);

}  // namespace moetron::kernels
