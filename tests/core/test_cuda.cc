// CUDA backend tests: they run where a GPU is visible and skip, saying so, where none is. The
// kernels of core/cuda/kernels.cu against the host launchers of the same math
// (core/kernels/host.h, themselves checked against the CPU backend by test_kernel_math.cc):
// bit for bit where the math has no library function, within a few ulp where expf is the
// device's.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/cuda/device.h"
#include "core/cuda/kernels.h"
#include "core/kernels/host.h"

namespace moetron {
namespace {

#define MOETRON_REQUIRE_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device visible: CUDA tests skipped"

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

TEST(Cuda, AddMatchesCpu) {
  MOETRON_REQUIRE_GPU();
  std::vector<float> a(1000), b(1000), out(1000);
  for (int i = 0; i < 1000; ++i) a[i] = static_cast<float>(i), b[i] = 0.5f * static_cast<float>(i);
  cuda::add(a, b, out);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  std::cout << "ran on " << cuda::device_description(0) << "\n";
}

TEST(Cuda, SwigluMatchesTheHostMath) {
  MOETRON_REQUIRE_GPU();
  constexpr int64_t rows = 301, width = 77;
  const std::vector<float> gu = random_values(rows * 2 * width, 1, 3.0f);
  const std::vector<float> dout = random_values(rows * width, 2);
  std::vector<float> out(rows * width), dgu(rows * 2 * width);
  kernels::host::swiglu_forward(gu.data(), out.data(), rows, width);
  kernels::host::swiglu_backward(dout.data(), gu.data(), dgu.data(), rows, width);
  cuda::DeviceFloats d_gu(gu), d_dout(dout), d_out(out.size()), d_dgu(dgu.size());
  cuda::swiglu_forward(d_gu.get(), d_out.get(), rows, width);
  cuda::swiglu_backward(d_dout.get(), d_gu.get(), d_dgu.get(), rows, width);
  const std::vector<float> got = d_out.to_host(), dgot = d_dgu.to_host();
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_NEAR(got[i], out[i], 4e-7 * std::abs(out[i]) + 1e-30) << i;
  for (size_t i = 0; i < dgu.size(); ++i)
    ASSERT_NEAR(dgot[i], dgu[i], 4e-7 * std::abs(dgu[i]) + 1e-30) << i;
}

TEST(Cuda, AdamwMatchesTheHostMathBitwise) {
  MOETRON_REQUIRE_GPU();
  constexpr int64_t n = 100003;
  const std::vector<float> g = random_values(n, 3);
  std::vector<float> p = random_values(n, 4), m = random_values(n, 5, 0.1f), v(n, 0.01f);
  cuda::DeviceFloats dp(p), dg(g), dm(m), dv(v);
  for (int64_t step = 1; step <= 3; ++step) {
    const auto s = kernels::adamw_scalars(1e-3, 0.9f, 0.95f, 1e-8f, 0.1f, step);
    kernels::host::adamw(p.data(), g.data(), m.data(), v.data(), n, s);
    cuda::adamw(dp.get(), dg.get(), dm.get(), dv.get(), n, s);
  }
  EXPECT_EQ(dp.to_host(), p);
  EXPECT_EQ(dm.to_host(), m);
  EXPECT_EQ(dv.to_host(), v);
}

TEST(Cuda, RmsnormMatchesTheHostMathBitwise) {
  MOETRON_REQUIRE_GPU();
  for (const int64_t cols : {int64_t{1}, int64_t{31}, int64_t{257}, int64_t{4096}}) {
    constexpr int64_t rows = 1003;
    const std::vector<float> x = random_values(rows * cols, 7, 2.0f), w = random_values(cols, 8);
    std::vector<float> y(rows * cols), rstd(rows);
    kernels::host::rmsnorm_forward(x.data(), w.data(), 1e-6f, y.data(), rstd.data(), rows, cols);
    cuda::DeviceFloats dx(x), dw(w), dy(y.size()), drstd(rstd.size());
    cuda::rmsnorm_forward(dx.get(), dw.get(), 1e-6f, dy.get(), drstd.get(), rows, cols);
    EXPECT_EQ(drstd.to_host(), rstd) << cols << " columns";
    EXPECT_EQ(dy.to_host(), y) << cols << " columns";
  }
}

}  // namespace
}  // namespace moetron
