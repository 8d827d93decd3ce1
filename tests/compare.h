// Element-wise comparison of test outputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

namespace moetron::test {

// Largest |got - want| / (|want| + floor) over the elements (floor makes the bound absolute near
// zero); NaN when any element is NaN on either side, infinity when the sizes differ, so that
// every bound fails.
inline double max_relative(std::span<const float> got, std::span<const float> want, double floor) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(double{got[i]} - want[i]) / (std::abs(double{want[i]}) + floor);
    if (std::isnan(d)) return d;
    worst = std::max(worst, d);
  }
  return worst;
}

// Largest |got - want| over the largest |want|: for outputs whose entries near zero carry a whole
// sum's rounding (GEMMs, cancelling differences such as RMSNorm's dx). Any container of numbers
// indexed from 0; a non-finite `got` or a size mismatch gives infinity.
template <typename Got, typename Want>
double relative_to_largest(const Got& got, const Want& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, largest = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    diff = std::max(diff,
                    std::isfinite(g) ? std::abs(g - w) : std::numeric_limits<double>::infinity());
    largest = std::max(largest, std::abs(w));
  }
  return diff / std::max(largest, 1e-30);
}

}  // namespace moetron::test
