#include "core/cuda/blas_lt.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include "core/check.h"
#include "core/cuda/check.cuh"

namespace moetron::cuda {
namespace {

std::string describe(const kernels::GemmPlan& p) {
  return detail::concat("m ", p.m, ", n ", p.n, ", k ", p.k, ", op ", p.trans_first ? "T" : "N",
                        p.trans_second ? "T" : "N", ", ld ", p.ld_first, "/", p.ld_second, "/",
                        p.ldc);
}

void ok(cublasStatus_t status, const char* what, const kernels::GemmPlan& p) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(detail::concat("cuBLASLt ", what, " (", describe(p),
                               "): ", cublasLtGetStatusString(status)));
}

// Descriptors of one call, destroyed with it (creating them costs microseconds; a cache keyed by
// the plan can come when profiles show it).
struct Call {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Call() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (second) cublasLtMatrixLayoutDestroy(second);
    if (first) cublasLtMatrixLayoutDestroy(first);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// The largest power of two up to 256 that divides the address. cuBLASLt's heuristic assumes
// 256-byte operands unless told otherwise, and a row slice (an expert's rows of x, a block of
// the vocabulary) need not be: a kernel chosen for more would fault on a misaligned address.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

// 32 MiB: what cuBLAS asks for on Hopper.
constexpr size_t kWorkspace = size_t{32} << 20;

}  // namespace

size_t blas_lt_version() {
  return cublasLtGetVersion();
}

BlasLt::BlasLt() : workspace_bytes_(kWorkspace) {
  cublasLtHandle_t h = nullptr;
  const cublasStatus_t status = cublasLtCreate(&h);
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cublasLtCreate: ") + cublasLtGetStatusString(status));
  handle_ = h;
  check(cudaMalloc(&workspace_, workspace_bytes_), "cudaMalloc (cuBLASLt workspace)");
}

BlasLt::~BlasLt() {
  cudaFree(workspace_);
  cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

void BlasLt::gemm(const kernels::GemmPlan& p, GemmOperands operands, const void* first,
                  const void* second, float* c) const {
  const cudaDataType_t in = operands == GemmOperands::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasOperation_t op_first = p.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = p.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  Call call;
  ok(cublasLtMatmulDescCreate(&call.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate", p);
  ok(cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                    sizeof(op_first)),
     "TRANSA", p);
  ok(cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                    sizeof(op_second)),
     "TRANSB", p);
  // Stored shapes (column-major): op(first) is [m, k], so first is [m, k] or [k, m].
  const auto rows_of = [](bool trans, int64_t r, int64_t c) { return trans ? c : r; };
  ok(cublasLtMatrixLayoutCreate(&call.first, in, rows_of(p.trans_first, p.m, p.k),
                                rows_of(p.trans_first, p.k, p.m), p.ld_first),
     "layout of the first operand", p);
  ok(cublasLtMatrixLayoutCreate(&call.second, in, rows_of(p.trans_second, p.k, p.n),
                                rows_of(p.trans_second, p.n, p.k), p.ld_second),
     "layout of the second operand", p);
  ok(cublasLtMatrixLayoutCreate(&call.c, CUDA_R_32F, p.m, p.n, p.ldc), "layout of C", p);
  ok(cublasLtMatmulPreferenceCreate(&call.pref), "PreferenceCreate", p);
  ok(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                          &workspace_bytes_, sizeof(workspace_bytes_)),
     "workspace preference", p);
  const uint32_t align_first = alignment_of(first), align_second = alignment_of(second),
                 align_c = alignment_of(c);
  for (const auto& [attribute, align] :
       {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_first},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_second},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c}})
    ok(cublasLtMatmulPreferenceSetAttribute(call.pref, attribute, align, sizeof(*align)),
       "alignment preference", p);
  const auto handle = static_cast<cublasLtHandle_t>(handle_);
  cublasLtMatmulHeuristicResult_t best{};
  int found = 0;
  ok(cublasLtMatmulAlgoGetHeuristic(handle, call.desc, call.first, call.second, call.c, call.c,
                                    call.pref, 1, &best, &found),
     "AlgoGetHeuristic", p);
  if (found == 0) throw Error("cuBLASLt has no algorithm for the GEMM (" + describe(p) + ")");
  ok(cublasLtMatmul(handle, call.desc, &p.alpha, first, call.first, second, call.second, &p.beta, c,
                    call.c, c, call.c, &best.algo, workspace_, workspace_bytes_, nullptr),
     "Matmul", p);
}

void BlasLt::grouped(const kernels::GroupedGemm& g, GemmOperands operands, const void* x,
                     const void* const* weights, float* y) const {
  const size_t elem = operands == GemmOperands::bf16 ? 2 : 4;
  for (size_t i = 0; i < g.plans.size(); ++i) {
    // first: the expert's weight, second: its rows of x (core/kernels/gemm_plan.h).
    const auto* xe = static_cast<const char*>(x) + static_cast<size_t>(g.x_offsets[i]) * elem;
    gemm(g.plans[i], operands, weights[g.experts[i]], xe, y + g.y_offsets[i]);
  }
}

}  // namespace moetron::cuda
