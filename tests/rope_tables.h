// RoPE tables of the plain (unscaled) frequencies 1 / theta^(2j / head_dim), for op tests that
// do not build a model (models/rope.h makes the model's, YaRN included).
#pragma once

#include <cmath>
#include <vector>

#include "core/ops.h"

namespace moetron::test {

inline void plain_rope_tables(int64_t head_dim, float theta, Tensor& cos, Tensor& sin) {
  std::vector<float> inv(static_cast<size_t>(head_dim / 2));
  for (size_t j = 0; j < inv.size(); ++j)
    inv[j] = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(head_dim));
  ops::rope_tables(ops::from_host(std::span<const float>(inv), cos.device()), 1.0f, cos, sin);
}

}  // namespace moetron::test
