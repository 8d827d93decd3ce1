#include "core/gemm_peak.h"

#include <algorithm>
#include <chrono>

#include "core/ops.h"

namespace moetron {

double measure_gemm_gflops(int64_t n, int reps) {
  Tensor a = Tensor::empty({n, n}), b = Tensor::empty({n, n}), c = Tensor::empty({n, n});
  ops::fill(a, 0.5f);
  ops::fill(b, 0.25f);
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

}  // namespace moetron
