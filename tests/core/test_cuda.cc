// CUDA backend tests: they run where a GPU is visible and skip, saying so, where none is.
#include <gtest/gtest.h>

#include <vector>

#include "core/cuda/device.h"

namespace moetron {
namespace {

TEST(Cuda, AddMatchesCpu) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device visible: CUDA tests skipped";
  std::vector<float> a(1000), b(1000), out(1000);
  for (int i = 0; i < 1000; ++i) a[i] = static_cast<float>(i), b[i] = 0.5f * static_cast<float>(i);
  cuda::add(a, b, out);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  std::cout << "ran on " << cuda::device_description(0) << "\n";
}

}  // namespace
}  // namespace moetron
