// bf16 precision end to end (docs/precision.md): a bf16 run is bitwise reproducible, resumes
// bitwise, trains as fp32 does within bf16's rounding, keeps fp32 master weights in its
// checkpoints, and a checkpoint of either precision resumes in the other.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/h5.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using data::testing::TempDir;

config::RunConfig moe_run(const fs::path& run_dir, int steps, config::RunConfig::Precision p) {
  config::RunConfig cfg = testing::small_moe_run(run_dir, steps);
  cfg.set_precision(p);
  cfg.mutable_checkpoint()->set_interval(4);
  cfg.mutable_checkpoint()->set_keep_last(0);
  return cfg;
}

// Copies run `from` as it was after step 4 into `to` (the later checkpoints gone).
void stopped_after_four(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  for (const auto& e : fs::directory_iterator(to / "checkpoints"))
    if (e.path().filename() != "step-00000004.h5" && e.path().extension() == ".h5")
      fs::remove(e.path());
  std::ofstream(to / "checkpoints" / "latest") << "step-00000004.h5\n";
}

TEST(Precision, Bf16IsBitwiseReproducibleAndTrainsAsFp32DoesWithinItsRounding) {
  TempDir a, b, c;
  std::ostringstream log;
  const TrainResult x = train(moe_run(a.path(), 8, config::RunConfig::BF16), log);
  const TrainResult y = train(moe_run(b.path(), 8, config::RunConfig::BF16), log);
  const TrainResult f = train(moe_run(c.path(), 8, config::RunConfig::FP32), log);
  EXPECT_EQ(x.losses, y.losses);
  EXPECT_EQ(x.grad_norms, y.grad_norms);
  ASSERT_EQ(x.losses.size(), f.losses.size());
  bool differs = false;
  for (size_t i = 0; i < f.losses.size(); ++i) {
    EXPECT_NEAR(x.losses[i], f.losses[i], 1e-2 * f.losses[i]) << "step " << i + 1;
    differs = differs || x.losses[i] != f.losses[i];
  }
  EXPECT_TRUE(differs) << "bf16 ran the fp32 GEMMs";
  EXPECT_NE(log.str().find("bf16 GEMM peak"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find(" + bf16 weights "), std::string::npos) << log.str();
  // The checkpoint holds the fp32 master weights, not their bf16 copies.
  const checkpoint::H5File h((a / "checkpoints" / "step-00000008.h5").string(),
                             checkpoint::H5File::Mode::read);
  const std::string q = "/params/model.layers.0.self_attn.q_proj.weight";
  EXPECT_TRUE(h.info(q).f32) << q;
}

TEST(Precision, Bf16ResumesBitwiseAndEitherPrecisionResumesTheOther) {
  TempDir bf, fp, bf_resumed, to_bf, to_fp;
  std::ostringstream log;
  TrainOptions resume;
  resume.resume = true;
  const TrainResult straight_bf = train(moe_run(bf.path(), 8, config::RunConfig::BF16), log);
  const TrainResult straight_fp = train(moe_run(fp.path(), 8, config::RunConfig::FP32), log);

  // bf16 stopped after step 4 and resumed in bf16: steps 5-8 bitwise as if never stopped.
  stopped_after_four(bf.path(), bf_resumed.path());
  const TrainResult r = train(moe_run(bf_resumed.path(), 8, config::RunConfig::BF16), log, resume);
  EXPECT_EQ(r.losses,
            std::vector<double>(straight_bf.losses.begin() + 4, straight_bf.losses.end()));
  EXPECT_EQ(r.grad_norms,
            std::vector<double>(straight_bf.grad_norms.begin() + 4, straight_bf.grad_norms.end()));

  // fp32's checkpoint resumed in bf16, and bf16's in fp32: the run goes on from the same master
  // weights and optimizer state, each step in the new precision (within its rounding of the run
  // that did not switch).
  stopped_after_four(fp.path(), to_bf.path());
  const TrainResult fp_to_bf =
      train(moe_run(to_bf.path(), 8, config::RunConfig::BF16), log, resume);
  stopped_after_four(bf.path(), to_fp.path());
  const TrainResult bf_to_fp =
      train(moe_run(to_fp.path(), 8, config::RunConfig::FP32), log, resume);
  ASSERT_EQ(fp_to_bf.losses.size(), 4u);
  ASSERT_EQ(bf_to_fp.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(fp_to_bf.losses[i], straight_fp.losses[4 + i], 1e-2 * straight_fp.losses[4 + i]);
    EXPECT_NEAR(bf_to_fp.losses[i], straight_bf.losses[4 + i], 1e-2 * straight_bf.losses[4 + i]);
  }
  EXPECT_NE(fp_to_bf.losses,
            std::vector<double>(straight_fp.losses.begin() + 4, straight_fp.losses.end()));
}

}  // namespace
}  // namespace moetron
