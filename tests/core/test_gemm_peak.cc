// The MFU denominator: the GEMM probe, and the peak kept plausible when a run outpaces a probe
// that ran on a busy machine (an MFU above 100% is never printed).
#include <gtest/gtest.h>

#include "core/gemm_peak.h"

namespace moetron {
namespace {

TEST(GemmPeak, TheProbeMeasuresARateInEitherPrecision) {
  for (const DType dtype : {DType::f32, DType::bf16}) {
    const double gflops = measure_gemm_gflops(256, 2, dtype);
    EXPECT_GT(gflops, 0.1) << dtype_name(dtype);
    EXPECT_LT(gflops, 1e6) << dtype_name(dtype);
  }
}

TEST(GemmPeak, BelowThePeakNothingIsProbedAgain) {
  int probes = 0;
  EXPECT_EQ(plausible_peak(200, 150, [&] { return ++probes, 1000.0; }), 200);
  EXPECT_EQ(plausible_peak(200, 200, [&] { return ++probes, 1000.0; }), 200);
  EXPECT_EQ(probes, 0);
}

TEST(GemmPeak, AboveThePeakTheProbeRunsAgainAndTheLargerCounts) {
  int probes = 0;
  // The start-up probe saw 106 GFLOP/s beside a package install; the run does 180.
  EXPECT_EQ(plausible_peak(106, 180, [&] { return ++probes, 222.0; }), 222);
  EXPECT_EQ(probes, 1);
  // The machine is still busy: the second probe is low too; what was achieved bounds it.
  EXPECT_EQ(plausible_peak(106, 180, [&] { return ++probes, 120.0; }), 180);
  EXPECT_EQ(probes, 2);
}

}  // namespace
}  // namespace moetron
