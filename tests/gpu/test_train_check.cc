// The GPU check's training steps (tests/gpu/train_check.h) in CI: the committed reference files
// are their configs' (so the GPU trains what the config says), the CPU still gives the
// reference's losses, the CUDA backend's code on the host launchers (cpu:1) meets the driver's
// bounds, and the driver itself runs its check there.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "configs/config.h"
#include "data/json.h"
#include "tests/data/test_util.h"
#include "tests/gpu/train_config.h"
#include "tests/host_kernels.h"
#include "tests/process.h"

namespace moetron {
namespace {

struct Reference {
  const char* config;  // under configs/ or bench/
  const char* file;    // under tests/reference/gpu/
  int64_t steps;
  const char* device_spec;
};
constexpr Reference kTiny{"configs/tiny.pbtxt", "tiny.json", 100, ""};
constexpr Reference kBench{"bench/gpu-moe.pbtxt", "gpu-moe.json", 0, "h200"};

std::string source(const std::string& path) {
  return std::string(MOETRON_SOURCE_DIR) + "/" + path;
}

data::JsonValue reference(const Reference& r) {
  const std::string path = source(std::string("tests/reference/gpu/") + r.file);
  return data::parse_json(data::testing::read_text(path), path);
}

// Regenerate with: build/tests/models/moetron_gpu_reference CONFIG STEPS [--device-spec NAME]
//   > tests/reference/gpu/FILE (the numbers of kTiny and kBench).
TEST(TrainCheck, TheCommittedReferencesAreTheirConfigs) {
  for (const Reference& r : {kTiny, kBench}) {
    SCOPED_TRACE(r.file);
    const gpu::TrainSpec want =
        gpu::train_spec(load_config(source(r.config), {}), r.steps, r.device_spec);
    const data::JsonValue file = reference(r);
    EXPECT_EQ(gpu::spec_json(gpu::spec_from_json(file.at("spec"))), gpu::spec_json(want))
        << "regenerate " << r.file << " from " << r.config;
    if (r.steps > 0) {
      for (const char* run : {"f32", "bf16"})
        EXPECT_EQ(gpu::run_from_json(file, run).size(), static_cast<size_t>(r.steps)) << run;
    }
  }
}

// The first steps again on the CPU, within 1e-5 in fp32 (another machine's vector width sums in
// another order) and 1e-3 in bf16; and in bf16 on cpu:1 (what the GPU runs, on the host) within
// the bound moetron_gpu_train holds a GPU to (the driver's own test below runs cpu:1 in fp32).
TEST(TrainCheck, TheCpuAndTheDeviceCodeGiveTheReferencesFirstSteps) {
  const data::JsonValue file = reference(kTiny);
  const gpu::TrainSpec spec = gpu::spec_from_json(file.at("spec"));
  struct Run {
    Device device;
    DType compute;
    int64_t steps;
    double rtol;
  };
  for (const Run& r : {Run{Device{}, DType::f32, 3, 1e-5}, Run{Device{}, DType::bf16, 3, 1e-3},
                       Run{test::host_kernels_device(), DType::bf16, 2, 1e-2}}) {
    const bool bf16 = r.compute == DType::bf16;
    SCOPED_TRACE(device_name(r.device) + (bf16 ? " bf16" : " f32"));
    const std::vector<gpu::StepRecord> want = gpu::run_from_json(file, bf16 ? "bf16" : "f32");
    Runtime rt;
    rt.device = r.device;
    rt.compute = r.compute;
    const std::vector<gpu::StepRecord> got = gpu::train(spec, rt, r.steps);
    for (int64_t s = 0; s < r.steps; ++s) {
      const gpu::StepRecord& w = want[static_cast<size_t>(s)];
      const gpu::StepRecord& g = got[static_cast<size_t>(s)];
      EXPECT_NEAR(g.loss, w.loss, r.rtol * w.loss) << "step " << s + 1;
      EXPECT_NEAR(g.grad_norm, w.grad_norm, 10 * r.rtol * w.grad_norm) << "step " << s + 1;
    }
  }
  // The loss falls: the stream has something to learn.
  const std::vector<gpu::StepRecord> f32 = gpu::run_from_json(file, "f32");
  EXPECT_LT(f32.back().loss, 0.8 * f32.front().loss);
}

// The driver's check, as launch/gpu_check.sh runs it, on cpu:1 for its first steps; and with a
// device this machine lacks it says so and exits 2 (the check is then skipped, not failed).
TEST(TrainCheck, TheDriverPassesOnCpu1AndSkipsWithoutAGpu) {
  const std::string driver = std::string(MOETRON_BINARY_DIR) + "/tests/models/moetron_gpu_train";
  const std::string ref = source("tests/reference/gpu/tiny.json");
  data::testing::TempDir dir;
  test::Exit e = test::wait_for(
      test::spawn({driver, "check", ref, "--device", "cpu:1", "--steps", "2"}, dir / "out.txt"),
      std::chrono::seconds(120));
  const std::string out = data::testing::read_text(dir / "out.txt");
  EXPECT_TRUE(e.exited && e.status == 0) << out;
  EXPECT_NE(out.find(": pass"), std::string::npos) << out;
  for (const Backend* b : backends())
    if (b->device().kind == DeviceKind::cuda) return;
  e = test::wait_for(
      test::spawn({driver, "bench", source("tests/reference/gpu/gpu-moe.json")}, dir / "bench.txt"),
      std::chrono::seconds(60));
  EXPECT_TRUE(e.exited && e.status == 2) << data::testing::read_text(dir / "bench.txt");
}

}  // namespace
}  // namespace moetron
