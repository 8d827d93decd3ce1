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

}  // namespace moetron::test
