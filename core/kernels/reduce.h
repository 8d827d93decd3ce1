// The gradient norm's sum of squares, host and device alike: fixed blocks of kSumSquaresBlock
// elements, each summed in order in double, then the blocks' sums in order. The CPU backend runs
// these functions (core/cpu/elementwise.cc) and the CUDA kernels a block per thread, so the sum
// has the same bits on both and for any thread count (a float's square is exact in double).
#pragma once

#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

inline constexpr int64_t kSumSquaresBlock = 4096;

MT_HD int64_t sum_squares_blocks(int64_t n) {
  return (n + kSumSquaresBlock - 1) / kSumSquaresBlock;
}

MT_HD double sum_squares_block(const float* x, int64_t n, int64_t b) {
  const int64_t end = (b + 1) * kSumSquaresBlock < n ? (b + 1) * kSumSquaresBlock : n;
  double s = 0.0;
  for (int64_t i = b * kSumSquaresBlock; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

// The blocks' sums in order.
MT_HD double sum_squares_total(const double* partial, int64_t blocks) {
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[b];
  return total;
}

}  // namespace moetron::kernels
