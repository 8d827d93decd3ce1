// Rotary position embedding on [batch, seq, heads, head_dim].
#include <cmath>

#include "core/cpu/kernels.h"
#include "core/kernels/rope.h"

namespace moetron::cpu {

void rope_tables(int64_t positions, int64_t half, const float* inv_freq, float attention_factor,
                 float* cos, float* sin) {
  // fp32 like Hugging Face: angle = pos * inv_freq, then cos/sin times the attention factor.
  for (int64_t j = 0; j < half; ++j)
    for (int64_t t = 0; t < positions; ++t) {
      const float angle = static_cast<float>(t) * inv_freq[j];
      cos[t * half + j] = std::cos(angle) * attention_factor;
      sin[t * half + j] = std::sin(angle) * attention_factor;
    }
}

void rope(float* x, const float* cos, const float* sin, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t half, bool interleaved, bool inverse) {
  // Pair j is (j, j + half) for rotate-half, (2j, 2j + 1) for interleaved.
  const int64_t a_stride = interleaved ? 2 : 1;
  const int64_t b_offset = interleaved ? 1 : half;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      const float* ct = cos + t * half;
      const float* st = sin + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* xh = x + ((b * seq + t) * heads + h) * head_dim;
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          kernels::rope_pair(xh[j * a_stride], xh[j * a_stride + b_offset], ct[j], sign * st[j]);
        }
      }
    }
}

}  // namespace moetron::cpu
