// Token embedding rows and their gradient.
#include <cstring>

#include "core/cpu/kernels.h"

namespace moetron::cpu {

void embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t first,
                       int64_t rows, int64_t dim, float* out) {
#pragma omp parallel for schedule(static) if (n * dim > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = ids[i] - first;
    if (row >= 0 && row < rows)
      std::memcpy(out + i * dim, table + row * dim, static_cast<size_t>(dim) * sizeof(float));
    else
      std::memset(out + i * dim, 0, static_cast<size_t>(dim) * sizeof(float));
  }
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t first, int64_t rows) {
  // Serial over rows (repeated ids would race), vectorized over the row; in row order, so
  // the sum is deterministic.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = ids[i] - first;
    if (r < 0 || r >= rows) continue;  // another rank's block of the vocabulary
    float* row = dtable + r * dim;
    const float* d = dout + i * dim;
#pragma omp simd
    for (int64_t c = 0; c < dim; ++c) row[c] += d[c];
  }
}

}  // namespace moetron::cpu
