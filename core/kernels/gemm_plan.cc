#include "core/kernels/gemm_plan.h"

namespace moetron::kernels {

GemmPlan plan_matmul(int64_t a_rows, int64_t a_cols, bool trans_a, int64_t b_rows, int64_t b_cols,
                     bool trans_b, float alpha, float beta) {
  // Row-major op(a) is [M, K], op(b) [K, N], c [M, N]; column-major c^T is [N, M].
  const int64_t M = trans_a ? a_cols : a_rows, K = trans_a ? a_rows : a_cols;
  const int64_t N = trans_b ? b_rows : b_cols;
  GemmPlan p;
  p.m = N;
  p.n = M;
  p.k = K;
  // Row-major b [b_rows, b_cols] is column-major [b_cols, b_rows] with ld b_cols: op(b)^T is it
  // as stored when b is not transposed, its transpose when it is. Likewise a.
  p.trans_first = trans_b;
  p.trans_second = trans_a;
  p.ld_first = b_cols;
  p.ld_second = a_cols;
  p.ldc = N;
  p.alpha = alpha;
  p.beta = beta;
  return p;
}

GroupedGemm plan_grouped(std::span<const int64_t> offsets, int64_t in, int64_t out) {
  GroupedGemm g;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    // y_e [rows, out] = x_e [rows, in] w_e^T, w_e [out, in].
    g.plans.push_back(plan_matmul(rows, in, false, out, in, true));
    g.experts.push_back(static_cast<int64_t>(e));
    g.x_offsets.push_back(offsets[e] * in);
    g.y_offsets.push_back(offsets[e] * out);
  }
  return g;
}

void host_gemm(const GemmPlan& p, const float* first, const float* second, float* c) {
  // Element (i, l) of op(X) for column-major X with leading dimension ld.
  auto at = [](const float* x, int64_t ld, bool trans, int64_t i, int64_t l) {
    return trans ? x[l + i * ld] : x[i + l * ld];
  };
  for (int64_t j = 0; j < p.n; ++j)
    for (int64_t i = 0; i < p.m; ++i) {
      double s = 0;
      for (int64_t l = 0; l < p.k; ++l)
        s += double{at(first, p.ld_first, p.trans_first, i, l)} *
             at(second, p.ld_second, p.trans_second, l, j);
      float& out = c[i + j * p.ldc];
      out = static_cast<float>(p.alpha * s + (p.beta == 0.0f ? 0.0 : double{p.beta} * out));
    }
}

}  // namespace moetron::kernels
