// The op harness's pieces shared by its case files: random and poisoned tensors, the case
// device, and GradCase (tests/core/test_ops.cc runs every case; op_cases_*.cc add cases).
#pragma once

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"

namespace moetron::op_harness {

inline Tensor random_tensor(Shape shape, std::mt19937& gen, float scale = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape));
  std::normal_distribution<float> normal(0.0f, scale);
  for (float& x : t.span<float>()) x = normal(gen);
  return t;
}

inline Tensor i32(const std::vector<int32_t>& values);  // below: on the cases' device

inline std::vector<double> to_double(const Tensor& t) {
  return {t.span<float>().begin(), t.span<float>().end()};
}

inline ::testing::AssertionResult close(std::span<const float> actual,
                                        const std::vector<double>& expected, double rtol,
                                        double atol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " vs " << expected.size();
  size_t bad = 0, worst = 0;
  double worst_err = -1.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::abs(actual[i] - expected[i]);
    const double excess = err - (atol + rtol * std::abs(expected[i]));
    if (excess > 0 || std::isnan(actual[i])) ++bad;
    if (excess > worst_err) worst_err = excess, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.size() << " mismatch; worst [" << worst << "] " << actual[worst]
         << " vs " << expected[worst];
}

// ---------------------------------------------------------------------------------------------
// Gradient cases: forward maps inputs to one output; backward maps (inputs, dy) to one
// gradient per input (an empty tensor where the input takes no gradient, e.g. ids).

// The device the gradient cases make their tensors on: the CPU, or the backend the harness runs
// them on (OpBackends below). A test's own state, set only by OnDevice.
inline thread_local Device t_case_device;
class OnDevice {
 public:
  explicit OnDevice(Device d) : saved_(t_case_device) { t_case_device = d; }
  ~OnDevice() { t_case_device = saved_; }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

 private:
  Device saved_;
};

// Outputs start as NaN: an op that overwrites must never read what was there (a freshly
// allocated buffer may hold NaN from earlier use; found in rmsnorm_backward's dx).
inline Tensor poisoned(Shape shape) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32, t_case_device);
  ops::fill(t, std::numeric_limits<float>::quiet_NaN());
  return t;
}

inline Tensor zeros(const Shape& shape) {
  return Tensor::zeros(shape, DType::f32, t_case_device);
}

// What a reduction op adds into a device scalar ([1] f64 on the case's device), read back.
template <typename Op>
inline double summed(Op&& op) {
  Tensor sum = Tensor::zeros({1}, DType::f64, t_case_device);
  op(sum);
  return ops::to_host<double>(sum)[0];
}

// An index tensor (i32) of `values`.
inline Tensor i32(const std::vector<int32_t>& values) {
  return ops::from_host(std::span<const int32_t>(values), t_case_device);
}

// A one-element f32 tensor holding v, and the value of one.
inline Tensor scalar(double v) {
  const float f = static_cast<float>(v);
  return ops::from_host(std::span<const float>(&f, 1), t_case_device);
}
inline float value_of(const Tensor& t) {
  return ops::to_host<float>(t).at(0);
}

// The double-precision reference of a case's forward: its inputs as doubles, its output.
using Values = std::vector<double>;
using Reference = std::function<Values(const std::vector<Values>&)>;

struct GradCase {
  std::string name;
  std::function<std::vector<Tensor>(std::mt19937&)> make_inputs;
  std::function<Tensor(const std::vector<Tensor>&)> forward;
  std::function<std::vector<Tensor>(const std::vector<Tensor>&, const Tensor& dy)> backward;
  double rtol = 2e-2, atol = 2e-3;  // against finite differences of the fp32 forward
  Reference reference = {};         // the same forward in double, naive loops
};

// Cases of the linear-attention ops (tests/core/op_cases_linear_attention.cc).
std::vector<GradCase> linear_attention_cases();

}  // namespace moetron::op_harness
