// exp and sigmoid written so that GCC vectorizes the loops calling them (libm's expf does
// not vectorize without -ffast-math). Max relative error ~2 ulp over the range we use.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moetron::cpu {

inline float fast_exp(float x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2].
  x = x < -87.3f ? -87.3f : (x > 88.37f ? 88.37f : x);  // 2^128 would be +inf
  // Round to nearest by the 1.5 * 2^23 trick: plain adds vectorize, nearbyint may not.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = std::fma(n, -0.693145751953125f, std::fma(n, -1.428606765330187e-06f, x));
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float fast_sigmoid(float x) {
  return 1.0f / (1.0f + fast_exp(-x));
}

}  // namespace moetron::cpu
