#include "core/gemm_peak.h"

#include <algorithm>
#include <chrono>

#include "core/ops.h"

namespace moetron {

double measure_gemm_gflops(int64_t n, int reps, DType dtype) {
  // The operands in `dtype`, filled as fp32 and cast (the fp32 ones gone before the GEMMs, so
  // the probe's memory, which the process keeps for its tensors, is no larger in bf16).
  const auto operand = [&](float value) {
    Tensor t32 = Tensor::empty({n, n});
    ops::fill(t32, value);
    if (dtype == DType::f32) return t32;
    Tensor t = Tensor::empty({n, n}, dtype);
    ops::cast(t32, t);
    return t;
  };
  const Tensor a = operand(0.5f), b = operand(0.25f);
  Tensor c = Tensor::empty({n, n});
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
