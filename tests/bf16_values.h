// Test values on the bf16 grid and their 16-bit words, for comparisons where both sides must
// read the same bf16 numbers (the GPU check's GEMMs and attention).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/bf16.h"

namespace moetron::test {

inline std::vector<float> on_bf16_grid(std::vector<float> v) {
  for (float& x : v) x = from_bf16(to_bf16(x));
  return v;
}

inline std::vector<uint16_t> bf16_words(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](float x) { return to_bf16(x); });
  return out;
}

inline std::vector<float> widened(const std::vector<uint16_t>& words) {
  std::vector<float> out(words.size());
  std::transform(words.begin(), words.end(), out.begin(), [](uint16_t w) { return from_bf16(w); });
  return out;
}

}  // namespace moetron::test
