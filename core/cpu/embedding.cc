// Token embedding rows and their gradient.
#include <cstring>

#include "core/cpu/kernels.h"

namespace moetron::cpu {

void embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t dim, float* out) {
#pragma omp parallel for schedule(static) if (n * dim > (1 << 15))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * dim, table + static_cast<int64_t>(ids[i]) * dim,
                static_cast<size_t>(dim) * sizeof(float));
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                        float* dtable, int64_t /*vocab*/) {
  // Serial over rows (repeated ids would race), vectorized over the row; in row order, so
  // the sum is deterministic.
  for (int64_t i = 0; i < n; ++i) {
    float* row = dtable + static_cast<int64_t>(ids[i]) * dim;
    const float* d = dout + i * dim;
#pragma omp simd
    for (int64_t c = 0; c < dim; ++c) row[c] += d[c];
  }
}

}  // namespace moetron::cpu
