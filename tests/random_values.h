// Normally distributed test inputs, the same for a seed on every machine run (std::mt19937 is
// specified; the normal distribution is libstdc++'s on both sides of a comparison).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
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

// A dispatch's slot_row [slots]: every seventh slot dropped (-1), the others holding distinct rows
// of [0, slots) in a scrambled order, as a dispatch plan's rows are (one slot per row).
inline std::vector<int32_t> scrambled_slots(int64_t slots, uint32_t seed) {
  std::vector<int32_t> rows(static_cast<size_t>(slots));
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937 gen(seed);
  std::shuffle(rows.begin(), rows.end(), gen);
  for (int64_t i = 3; i < slots; i += 7) rows[i] = -1;
  return rows;
}

}  // namespace moetron::test
