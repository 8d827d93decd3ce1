// fp32 GEMM: oneDNN's sgemm (about twice OpenBLAS here), OpenBLAS when oneDNN is absent.
#include <cblas.h>

#include "core/check.h"
#include "core/cpu/kernels.h"

#ifdef MOETRON_HAVE_DNNL
#include <dnnl.h>
#endif

namespace moetron::cpu {

void sgemm_openblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
#ifdef MOETRON_HAVE_DNNL
  // Row-major, like ours. Inside an OpenMP parallel region oneDNN runs on the calling thread.
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                      lda, b, ldb, beta, c, ldc);
  MOETRON_CHECK(st == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(st), " for ",
                m, "x", n, "x", k);
#else
  sgemm_openblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

const char* gemm_backend() {
#ifdef MOETRON_HAVE_DNNL
  return "onednn";
#else
  return "openblas";
#endif
}

}  // namespace moetron::cpu
