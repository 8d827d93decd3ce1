// CUDA tests: they run where a GPU is visible and skip, saying so, where none is.
#include <gtest/gtest.h>

#include <vector>

#include "core/cuda/device.h"
#include "tests/gpu/kernel_checks.h"
#if MOETRON_HAVE_CUDNN
#include "tests/gpu/attention_checks.h"
#endif
#if MOETRON_HAVE_NCCL
#include "tests/gpu/nccl_checks.h"
#endif

namespace moetron {
namespace {

#define MOETRON_REQUIRE_GPU()                                                                    \
  do {                                                                                           \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device visible: CUDA tests skipped"; \
  } while (0)

TEST(Cuda, AddMatchesCpu) {
  MOETRON_REQUIRE_GPU();
  std::vector<float> a(1000), b(1000), out(1000);
  for (int i = 0; i < 1000; ++i) a[i] = static_cast<float>(i), b[i] = 0.5f * static_cast<float>(i);
  cuda::add(a, b, out);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  std::cout << "ran on " << cuda::device_description(0) << "\n";
}

// The kernels of core/cuda/kernels.cu against the host launchers of the same math
// (core/kernels/host.h, themselves checked against the CPU backend by test_kernel_math.cc):
// bit for bit where the math has no library function, within a few ulp where expf is the
// device's (tests/gpu/kernel_checks.cc).
TEST(Cuda, KernelsMatchTheHostMath) {
  MOETRON_REQUIRE_GPU();
  for (const gpu::KernelCheck& c : gpu::run_kernel_checks())
    EXPECT_TRUE(c.passed()) << c.name << ": " << c.max_relative << " relative, bound " << c.bound;
}

#if MOETRON_HAVE_CUDNN
// cuDNN's fused attention, forward and backward, against a double reference that
// CudnnAttention.TheGpuChecksReferenceMatchesTheCpuBackend checks on every CI run.
TEST(Cuda, CudnnAttentionMatchesTheDoubleReference) {
  MOETRON_REQUIRE_GPU();
  for (const gpu::KernelCheck& c : gpu::run_attention_checks())
    EXPECT_TRUE(c.passed()) << c.name << ": " << c.max_relative << " relative, bound " << c.bound;
}
#endif

#if MOETRON_HAVE_NCCL
// NCCL's collectives over device memory with the one rank one GPU gives (tests/gpu/nccl_checks.h).
TEST(Cuda, NcclCollectivesOfOneRankLeaveTheirInput) {
  MOETRON_REQUIRE_GPU();
  for (const gpu::KernelCheck& c : gpu::run_nccl_checks())
    EXPECT_TRUE(c.passed()) << c.name << ": " << c.max_relative << " relative, bound " << c.bound;
}
#endif

}  // namespace
}  // namespace moetron
