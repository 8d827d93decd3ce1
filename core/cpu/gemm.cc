// GEMMs: oneDNN's sgemm (about twice OpenBLAS here) and bf16 matmul, OpenBLAS when oneDNN is
// absent, and plain loops when both are (the CUDA-only build, where the CPU is only the GPU
// check's oracle).
#if MOETRON_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include <vector>

#include "core/check.h"
#include "core/cpu/kernels.h"

#ifdef MOETRON_HAVE_DNNL
#include <dnnl.h>
#include <dnnl.hpp>
#endif

namespace moetron::cpu {

#if MOETRON_HAVE_OPENBLAS
void sgemm_openblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}
#else
namespace {
// Row by row over the threads, each element one sum over k in order.
void sgemm_loops(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p)
        acc += (trans_a ? a[p * lda + i] : a[i * lda + p]) *
               (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]);
    }
}
}  // namespace
#endif

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
#ifdef MOETRON_HAVE_DNNL
  // Row-major, like ours. Inside an OpenMP parallel region oneDNN runs on the calling thread.
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                      lda, b, ldb, beta, c, ldc);
  MOETRON_CHECK(st == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(st), " for ",
                m, "x", n, "x", k);
#elif MOETRON_HAVE_OPENBLAS
  sgemm_openblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
  sgemm_loops(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

namespace {

// bf16 operands widened to fp32 (exact) and multiplied by sgemm: the same results as a bf16 GEMM
// with fp32 accumulation, at sgemm's speed.
void gemm_bf16_widened(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
                       float* c, int64_t ldc) {
  // A [rows, cols] block with row stride ld spans (rows - 1) * ld + cols elements.
  const auto widen = [](const uint16_t* x, int64_t rows, int64_t cols, int64_t ld) {
    const int64_t n = (rows - 1) * ld + cols;
    std::vector<float> out(static_cast<size_t>(n));
    from_bf16(x, out.data(), n);
    return out;
  };
  const std::vector<float> af = widen(a, trans_a ? k : m, trans_a ? m : k, lda);
  const std::vector<float> bf = widen(b, trans_b ? n : k, trans_b ? k : n, ldb);
  sgemm(trans_a, trans_b, m, n, k, alpha, af.data(), lda, bf.data(), ldb, beta, c, ldc);
}

#ifdef MOETRON_HAVE_DNNL
using dnnl::memory;
using dims = memory::dims;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The bf16 matmul of C = alpha op(A) op(B) + beta C; throws dnnl::error when this CPU has none.
dnnl::matmul::primitive_desc bf16_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n,
                                         int64_t k, float alpha, int64_t lda, int64_t ldb,
                                         float beta, int64_t ldc) {
  // Row-major operands; a transposed one is the same memory with swapped strides.
  const memory::desc a_md({m, k}, memory::data_type::bf16, trans_a ? dims{1, lda} : dims{lda, 1});
  const memory::desc b_md({k, n}, memory::data_type::bf16, trans_b ? dims{1, ldb} : dims{ldb, 1});
  const memory::desc c_md({m, n}, memory::data_type::f32, dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(beta);
    attr.set_post_ops(sum);
  }
  return {dnnl::matmul::desc(a_md, b_md, c_md), attr, cpu_engine()};
}

// Whether oneDNN has a bf16 matmul on this CPU (oneDNN 2.x needs AVX-512 for one): asked once.
bool onednn_bf16() {
  static const bool has = [] {
    try {
      bf16_matmul(false, false, 16, 16, 16, 1.0f, 16, 16, 0.0f, 16);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}
#endif

}  // namespace

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
               int64_t ldc) {
  if (m == 0 || n == 0) return;
#ifdef MOETRON_HAVE_DNNL
  if (onednn_bf16()) {
    // A stream per thread: a call inside a parallel region runs on its thread, as sgemm's.
    // oneDNN caches the primitives it builds for each shape.
    thread_local dnnl::stream stream(cpu_engine());
    const auto pd = bf16_matmul(trans_a, trans_b, m, n, k, alpha, lda, ldb, beta, ldc);
    const auto& a_md = pd.src_desc();
    memory a_mem(a_md, cpu_engine(), const_cast<uint16_t*>(a));
    memory b_mem(pd.weights_desc(), cpu_engine(), const_cast<uint16_t*>(b));
    memory c_mem(pd.dst_desc(), cpu_engine(), c);
    dnnl::matmul(pd).execute(
        stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream.wait();
    return;
  }
#endif
  gemm_bf16_widened(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char* gemm_bf16_backend() {
#ifdef MOETRON_HAVE_DNNL
  if (onednn_bf16()) return "onednn bf16 matmul";
#endif
  return "bf16 widened to fp32 + sgemm (no bf16 GEMM on this CPU)";
}

const char* gemm_backend() {
#ifdef MOETRON_HAVE_DNNL
  return "onednn";
#elif MOETRON_HAVE_OPENBLAS
  return "openblas";
#else
  return "plain loops";
#endif
}

}  // namespace moetron::cpu
