// y = x w^T for the few rows of a decoding step, from the transposed weight wt = w^T [in, out]:
// every y[r, j] is one chain of fused multiply-adds over k = 0, 1, ..., in - 1, vectorised
// across j (no horizontal sums). A row's result is therefore the same bits whatever rows come
// with it and whichever code path (row group, block or tail) computes it; a GEMM picks kernels
// and blocking by the row count, so one row and a chunk of rows would differ in the last bits.
#include <algorithm>
#include <cmath>

#include "core/cpu/kernels_decode.h"

namespace moetron::cpu {
namespace {

// Outputs per block, split among the rows of a group so that every group keeps 8 independent
// accumulator vectors of 16 (enough to hide the FMA latency on two FMA ports) and loads each
// weight vector once for all its rows.
constexpr int64_t kBlock = 128;

template <int R>
void block(const float* x, int64_t in, const float* wt, int64_t out, int64_t j0, float* y) {
  constexpr int64_t C = kBlock / R;
  float acc[R][C] = {};
  for (int64_t k = 0; k < in; ++k) {
    const float* w = wt + k * out + j0;
    for (int r = 0; r < R; ++r) {
      const float a = x[r * in + k];
      for (int64_t l = 0; l < C; ++l) acc[r][l] = std::fma(a, w[l], acc[r][l]);
    }
  }
  for (int r = 0; r < R; ++r) std::copy(acc[r], acc[r] + C, y + r * out + j0);
}

// One row over the outputs [j0, out) of a last, narrower block: the same chains.
void tail(const float* x, int64_t in, const float* wt, int64_t out, int64_t j0, float* y) {
  float acc[kBlock] = {};
  const int64_t n = out - j0;
  for (int64_t k = 0; k < in; ++k) {
    const float* w = wt + k * out + j0;
    for (int64_t l = 0; l < n; ++l) acc[l] = std::fma(x[k], w[l], acc[l]);
  }
  std::copy(acc, acc + n, y + j0);
}

// Rows [r, r + R) over the block at j0, as sub-blocks of kBlock / R outputs.
template <int R>
void rows_block(const float* x, int64_t in, const float* wt, int64_t out, int64_t j0, float* y) {
  for (int64_t s = 0; s < R; ++s) block<R>(x, in, wt, out, j0 + s * (kBlock / R), y);
}

}  // namespace

void linear_rows(const float* x, int64_t rows, int64_t in, const float* wt, int64_t out, float* y) {
  const int64_t blocks = (out + kBlock - 1) / kBlock;
  auto run = [&](int64_t b) {
    const int64_t j0 = b * kBlock;
    int64_t r = 0;
    if (j0 + kBlock > out) {
      for (; r < rows; ++r) tail(x + r * in, in, wt, out, j0, y + r * out);
      return;
    }
    for (; r + 4 <= rows; r += 4) rows_block<4>(x + r * in, in, wt, out, j0, y + r * out);
    for (; r + 2 <= rows; r += 2) rows_block<2>(x + r * in, in, wt, out, j0, y + r * out);
    for (; r < rows; ++r) rows_block<1>(x + r * in, in, wt, out, j0, y + r * out);
  };
  // Threads pay off from about a million multiply-adds; below, even entering an OpenMP region
  // (one per projection of every decoding step) costs more than it saves.
  if (rows * out * in < (int64_t{1} << 20)) {
    for (int64_t b = 0; b < blocks; ++b) run(b);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) run(b);
}

void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace moetron::cpu
