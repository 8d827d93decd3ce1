// Normally distributed test inputs, the same for a seed on every machine run (std::mt19937 is
// specified; the normal distribution is libstdc++'s on both sides of a comparison).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace moetron::test {

inline std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

}  // namespace moetron::test
