#include "core/gemm_peak.h"

#include <algorithm>
#include <chrono>

#include "core/ops.h"

namespace moetron {

double measure_gemm_gflops(int64_t n, int reps, DType dtype) {
  Tensor a32 = Tensor::empty({n, n}), b32 = Tensor::empty({n, n}), c = Tensor::empty({n, n});
  ops::fill(a32, 0.5f);
  ops::fill(b32, 0.25f);
  Tensor a = a32, b = b32;
  if (dtype == DType::bf16) {
    a = Tensor::empty({n, n}, DType::bf16), b = Tensor::empty({n, n}, DType::bf16);
    ops::cast(a32, a);
    ops::cast(b32, b);
  }
  ops::matmul(a, false, b, false, c);  // warm-up: page faults, oneDNN's kernel selection
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    ops::matmul(a, false, b, false, c);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(n) * n * n / best * 1e-9;
}

double plausible_peak(double peak, double achieved, const std::function<double()>& probe) {
  if (achieved <= peak) return peak;
  return std::max({peak, achieved, probe()});
}

}  // namespace moetron
