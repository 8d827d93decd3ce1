// Shared helpers of the layer tests: loading golden parameters into a ParamTable, comparing
// parameter gradients, and finite-difference checks of a layer's backward.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "core/ops.h"
#include "models/params.h"
#include "tests/adam_check.h"
#include "tests/golden.h"

namespace moetron::test {

inline Tensor tensor_from(const Golden& g, const std::string& name, Shape shape) {
  const std::vector<float> v = g.floats(name);
  Tensor t = Tensor::empty(std::move(shape));
  EXPECT_EQ(static_cast<int64_t>(v.size()), t.numel()) << g.path() << " " << name;
  std::copy(v.begin(), v.begin() + std::min<int64_t>(t.numel(), static_cast<int64_t>(v.size())),
            t.span<float>().begin());
  return t;
}

// Copies /group/<name> of every parameter of the table from the golden file.
inline void load_params(ParamTable& table, const Golden& g, const std::string& group) {
  for (int id = 0; id < static_cast<int>(table.infos().size()); ++id) {
    const ParamInfo& p = table.info(id);
    const std::string path = group + "/" + p.name;
    ASSERT_TRUE(g.has(path)) << g.path() << " lacks " << path;
    std::vector<size_t> shape = g.shape(path);
    ASSERT_EQ(Shape(shape.begin(), shape.end()), p.shape) << path;
    const std::vector<float> v = g.floats(path);
    Tensor value = table.value(id);
    ops::copy_from_host(std::span<const float>(v), value);  // on the table's device
  }
}

// A weight gradient sums many products, and the fp32 rounding of such a sum scales with the
// tensor's largest gradients, not with the element: a small element of a large gradient (k_proj:
// 0.018 in a tensor reaching 55) differs between two fp32 implementations by far more than 1e-4
// of itself, while both are within 3e-7 of the tensor's largest element from the fp64 truth. So
// the absolute tolerance grows with the tensor: `atol` or `of_largest` (1e-6) of its largest
// element.
inline void expect_param_grads(const ParamTable& table, const Golden& g, const std::string& group,
                               float rtol, float atol, float of_largest = 1e-6f) {
  for (int id = 0; id < static_cast<int>(table.infos().size()); ++id) {
    if (table.info(id).kind == ParamKind::buffer) continue;  // state, no gradient
    const std::string& name = table.info(id).name;
    const std::vector<float> want = g.floats(group + "/" + name);
    float largest = 0;
    for (float v : want) largest = std::max(largest, std::abs(v));
    EXPECT_TRUE(
        all_close(table.grad(id).span<float>(), want, rtol, std::max(atol, of_largest * largest)))
        << "gradient of " << name;
  }
}

// Central finite differences of L = sum(forward() * dy) with respect to `x`, on up to
// `samples` coordinates, against the analytic gradient `grad` (already computed); the step is
// `step` times max(1, |x|).
inline void expect_finite_differences(const std::string& what, Tensor x, const Tensor& grad,
                                      const std::function<Tensor()>& forward, const Tensor& dy,
                                      int samples = 24, double rtol = 2e-2, double atol = 1e-3,
                                      float step = 1e-2f) {
  auto objective = [&] {
    const Tensor y = forward();
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i)
      s += static_cast<double>(y.span<float>()[i]) * dy.span<float>()[i];
    return s;
  };
  double max_grad = 0;
  for (float v : grad.span<float>()) max_grad = std::max(max_grad, std::abs(double{v}));
  std::mt19937 gen(7);
  std::uniform_int_distribution<int64_t> pick(0, x.numel() - 1);
  for (int i = 0; i < samples; ++i) {
    const int64_t j = pick(gen);
    float& xj = x.span<float>()[j];
    const float orig = xj, h = step * std::max(1.0f, std::abs(orig));
    xj = orig + h;
    const double up = objective();
    xj = orig - h;
    const double down = objective();
    xj = orig;
    const double fd = (up - down) / (2.0 * h), an = grad.span<float>()[j];
    EXPECT_NEAR(an, fd, atol + rtol * std::max(std::abs(fd), 0.05 * max_grad))
        << what << " element " << j;
  }
}

// The whole-model goldens' weight check (tests/adam_check.h): each element within 1e-4 + 1e-3
// relative of the golden's /params_final/NAME (seen: 6% of that at worst), and more only where
// rounding decided its updates, as the golden's /gradsT of every step say.
inline AdamCheck golden_adam_check(const Golden& g, int steps, float rounding = 1e-5f) {
  AdamCheck check(steps, 1e-4, 1e-3, rounding);
  for (int t = 0; t < steps; ++t) {
    const std::string group = "/grads" + std::to_string(t);
    for (const std::string& name : g.names(group))
      check.add_gradient(name, t, g.floats(group + "/" + name));
  }
  return check;
}

}  // namespace moetron::test
