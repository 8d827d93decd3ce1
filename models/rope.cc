#include "models/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moetron {
namespace {

// YaRN's mscale(s, m) = 0.1 m ln(s) + 1 (1 for s <= 1).
float mscale(float scale, float m) {
  return scale <= 1.0f ? 1.0f : 0.1f * m * std::log(scale) + 1.0f;
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelDims& d) {
  const int64_t dim = d.rope_dim, half = dim / 2;
  const float base = d.rope_theta;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    inv[static_cast<size_t>(j)] =
        1.0f / std::pow(base, static_cast<float>(2 * j) / static_cast<float>(dim));
  const YarnDims& y = d.yarn;
  if (y.factor <= 1.0f) return inv;
  // The dims that complete fewer than beta_slow rotations over the original context are
  // interpolated (divided by factor), those above beta_fast kept, a linear ramp between.
  auto correction_dim = [&](float rotations) {
    return static_cast<double>(dim) *
           std::log(static_cast<double>(y.original) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(static_cast<double>(base)));
  };
  const double low = std::max(std::floor(correction_dim(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(y.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t j = 0; j < half; ++j) {
    const auto ramp =
        static_cast<float>(std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0));
    const float extrapolation = 1.0f - ramp;
    float& f = inv[static_cast<size_t>(j)];
    const float interpolated = f / y.factor;
    f = interpolated * (1.0f - extrapolation) + f * extrapolation;
  }
  return inv;
}

float rope_attention_factor(const YarnDims& y) {
  if (y.factor <= 1.0f) return 1.0f;
  if (y.mscale > 0.0f && y.mscale_all_dim > 0.0f)
    return mscale(y.factor, y.mscale) / mscale(y.factor, y.mscale_all_dim);
  return mscale(y.factor, 1.0f);
}

float yarn_softmax_factor(const YarnDims& y) {
  if (y.factor <= 1.0f || y.mscale_all_dim <= 0.0f) return 1.0f;
  const float m = mscale(y.factor, y.mscale_all_dim);
  return m * m;
}

RopeTables RopeTables::make(const ModelDims& d, int64_t positions, Device device) {
  const std::vector<float> inv = rope_inv_freq(d);
  const auto half = static_cast<int64_t>(inv.size());
  RopeTables r{Tensor::empty({positions, half}, DType::f32, device),
               Tensor::empty({positions, half}, DType::f32, device), d.rope_style};
  ops::rope_tables(ops::from_host(std::span<const float>(inv), device),
                   rope_attention_factor(d.yarn), r.cos, r.sin);
  return r;
}

}  // namespace moetron
