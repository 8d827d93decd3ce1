// `moetron train` on a device (config field `device`), in CI on cpu:1: the CUDA backend's code
// on the host launchers, which the trainer reaches exactly as it would a GPU (the model's
// tensors on the device, checkpoints staged through host copies). The device's run gives the
// CPU's losses, and its checkpoints resume on the CPU and the CPU's on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "configs/config.h"
#include "tests/data/test_util.h"
#include "tests/host_kernels.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

using data::testing::TempDir;

config::RunConfig device_run(const std::filesystem::path& dir, const std::string& device) {
  config::RunConfig cfg = testing::small_moe_run(dir, 4);
  cfg.mutable_checkpoint()->set_interval(2);
  cfg.mutable_logging()->set_val_interval(0);
  cfg.set_device(device);
  return cfg;
}

// got[i] against want[from + i] within rtol; prints the worst relative difference.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, size_t from,
                  double rtol, const char* what) {
  ASSERT_LE(from + got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[from + i], rtol * want[from + i])
        << what << " of step " << from + i + 1;
    worst = std::max(worst, std::abs(got[i] - want[from + i]) / want[from + i]);
  }
  std::cout << what << ": worst relative difference " << worst << std::endl;
}

// 4 MoE steps on the CPU and on cpu:1, checkpoints at steps 2 and 4; then each run's step-2
// checkpoint resumed on the other device. The same math in other summation orders: the losses
// within 1e-6 relative, the norms 1e-5 (seen: 1.5e-9 and 2.7e-8).
TEST(DeviceRun, Cpu1TrainsAsTheCpuAndTheirCheckpointsResumeOnEither) {
  const std::string dev = device_name(test::host_kernels_device());
  TempDir cpu_dir, dev_dir;
  std::ostringstream log;
  const TrainResult cpu = train(device_run(cpu_dir.path(), "cpu"), log);
  const TrainResult on_dev = train(device_run(dev_dir.path(), dev), log);
  ASSERT_EQ(on_dev.losses.size(), 4u);
  expect_close(on_dev.losses, cpu.losses, 0, 1e-6, "loss");
  expect_close(on_dev.grad_norms, cpu.grad_norms, 0, 1e-5, "gradient norm");
  EXPECT_NE(log.str().find(" threads on " + dev + ", "), std::string::npos) << log.str();

  TrainOptions resume;
  resume.resume = true;
  resume.resume_from = "2";
  for (const auto& [dir, device] :
       {std::pair{dev_dir.path(), std::string("cpu")}, std::pair{cpu_dir.path(), dev}}) {
    SCOPED_TRACE("step 2 of the run in " + dir.string() + " resumed on " + device);
    const TrainResult r = train(device_run(dir, device), log, resume);
    ASSERT_EQ(r.losses.size(), 2u);
    expect_close(r.losses, cpu.losses, 2, 1e-6, "loss");
    expect_close(r.grad_norms, cpu.grad_norms, 2, 1e-5, "gradient norm");
  }
}

// A device name that is not one, and one this machine lacks, stop the run before its directory
// exists, naming the field.
TEST(DeviceRun, AnUnknownOrAbsentDeviceIsRefusedBeforeAnythingIsWritten) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 2);
  cfg.set_device("tpu");
  try {
    validate_config(cfg);
    ADD_FAILURE() << "device tpu accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device = \"tpu\": must be cpu, cuda or cuda:N"),
              std::string::npos)
        << e.what();
  }
  cfg.set_device("cuda:7");
  std::ostringstream log;
  try {
    train(cfg, log);
    ADD_FAILURE() << "device cuda:7 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device = \"cuda:7\": device cuda:7 has no backend"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
}

}  // namespace
}  // namespace moetron
