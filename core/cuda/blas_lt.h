// The CUDA backend's GEMMs: cuBLASLt, run from the plans of core/kernels/gemm_plan.h (the
// row-major products as column-major GEMMs, tested on the CPU by GemmPlan.*), so this file only
// hands a plan's fields to the library. Operands fp32, or bf16 words (the dtype plan's compute
// copies, docs/precision.md); accumulation (CUBLAS_COMPUTE_32F) and the output fp32. Needs a
// GPU to run; the GPU check compares it with the host GEMM of the same plans
// (tests/gpu/kernel_checks.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/kernels/gemm_plan.h"

namespace moetron::cuda {

enum class GemmOperands { f32, bf16 };

// A cuBLASLt handle and its workspace on the current device (RAII); GEMMs on the default
// stream, ordered with the kernels of core/cuda/kernels.h.
// The cuBLASLt library loaded (cublasLtGetVersion: 130100 for 13.1.0), for logs.
size_t blas_lt_version();

class BlasLt {
 public:
  BlasLt();
  ~BlasLt();
  BlasLt(const BlasLt&) = delete;
  BlasLt& operator=(const BlasLt&) = delete;

  // c = alpha op(first) op(second) + beta c as the plan says; device pointers. Throws Error
  // naming the plan and cuBLASLt's status when the library finds no algorithm or fails.
  void gemm(const kernels::GemmPlan& p, GemmOperands operands, const void* first,
            const void* second, float* c) const;
  // The grouped expert GEMM y = x w_e^T of plan_grouped, a cuBLASLt call per expert with rows
  // (weights: one device pointer per expert; the plans were made from host-side offsets).
  void grouped(const kernels::GroupedGemm& g, GemmOperands operands, const void* x,
               const void* const* weights, float* y) const;

 private:
  void* handle_ = nullptr;     // a cublasLtHandle_t
  void* workspace_ = nullptr;  // device memory the library may use
  size_t workspace_bytes_ = 0;
};

}  // namespace moetron::cuda
