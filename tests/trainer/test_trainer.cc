// The training loop end to end on a small generated dataset: loss falls, runs are bitwise
// reproducible, gradient accumulation equals a bigger batch, divergence stops cleanly, a real
// SIGTERM stops a real process with its metrics intact; plus the schedules.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "configs/config.h"
#include "core/check.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "tests/data/test_util.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/cli/commands.h"
#include "trainer/lr_schedule.h"
#include "trainer/run_dir.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

using data::testing::TempDir;
using testing::dataset_dir;
using testing::lines_of;
using testing::small_run;

// Trains `cfg`, which must fail; returns the error's message.
std::string training_error(const config::RunConfig& cfg) {
  std::ostringstream log;
  try {
    train(cfg, log);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected training to fail";
  return {};
}

TEST(Train, LossFallsAndRunDirectoryIsComplete) {
  TempDir run;
  std::ostringstream log;
  const TrainResult r = train(small_run(run.path(), 60), log);
  ASSERT_EQ(r.steps, 60);
  EXPECT_LT(r.main_losses.back(), r.main_losses.front() - 1.5) << log.str();
  EXPECT_TRUE(std::isfinite(r.final_val_loss));
  EXPECT_TRUE(std::filesystem::exists(run / "config.pbtxt"));
  EXPECT_NO_THROW(parse_config_text(data::testing::read_text(run / "config.pbtxt"), "resolved"));
  const auto metrics = lines_of(run / "metrics.jsonl");
  // One per step, one per validation (every 10), the peak memory at the end.
  EXPECT_EQ(metrics.size(), 60u + 6u + 1u);
  EXPECT_NE(metrics.front().find("\"kind\": \"train\", \"step\": 1,"), std::string::npos)
      << metrics.front();  // steps count from 1 everywhere
  EXPECT_NE(metrics[metrics.size() - 2].find("\"kind\": \"val\", \"step\": 60,"), std::string::npos)
      << metrics[metrics.size() - 2];
  EXPECT_NE(metrics.back().find("\"kind\": \"memory\", \"step\": 60, \"peak_resident_bytes\""),
            std::string::npos)
      << metrics.back();
  EXPECT_NE(log.str().find("memory per rank (plan): params "), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("memory per rank: peak resident "), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("step    60/60 | loss"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("MFU"), std::string::npos);
  const std::string log_file = data::testing::read_text(run / "train.log");
  EXPECT_NE(log_file.find("step    60/60"), std::string::npos);
  EXPECT_NE(log_file.find("val  step 60 |"), std::string::npos);
  EXPECT_NE(log_file.find("; the latest checkpoint is step 60 in "), std::string::npos) << log_file;
  EXPECT_TRUE(std::filesystem::exists(run / "checkpoints" / "step-00000060.h5"));
}

TEST(Train, SameConfigAndSeedGiveBitwiseSameLosses) {
  TempDir a, b, c;
  std::ostringstream log;
  const TrainResult ra = train(small_run(a.path(), 12), log);
  const TrainResult rb = train(small_run(b.path(), 12), log);
  EXPECT_EQ(ra.losses, rb.losses);
  config::RunConfig other = small_run(c.path(), 12);
  other.set_seed(other.seed() + 1);
  EXPECT_NE(train(other, log).losses, ra.losses);
}

TEST(Train, GradientAccumulationEqualsTheBiggerBatch) {
  TempDir a, b;
  std::ostringstream log;
  config::RunConfig accum = small_run(a.path(), 4);
  accum.mutable_data()->set_grad_accum_steps(2);
  config::RunConfig big = small_run(b.path(), 4);
  big.mutable_data()->set_micro_batch_size(8);
  // The loader numbers samples over the whole step, so both see the same 8 windows per step.
  const TrainResult ra = train(accum, log), rb = train(big, log);
  for (size_t i = 0; i < ra.losses.size(); ++i)
    EXPECT_NEAR(ra.losses[i], rb.losses[i], 2e-5 * rb.losses[i]) << "step " << i;
}

TEST(Train, DivergenceStopsWithAClearErrorAndKeepsTheMetrics) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 20);
  cfg.mutable_optimizer()->set_lr(1e30f);
  cfg.mutable_optimizer()->set_grad_clip(0.0f);
  cfg.mutable_schedule()->set_warmup_steps(0);
  const std::string msg = training_error(cfg);
  // Step 1 takes the huge update; step 2 sees the result. Steps count from 1.
  EXPECT_NE(msg.find("training diverged at step 2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("are complete up to step 1."), std::string::npos) << msg;
  EXPECT_NE(msg.find("optimizer.lr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("set optimizer.grad_clip"), std::string::npos) << msg;  // it is off
  EXPECT_NE(data::testing::read_text(run / "train.log").find("error: training diverged at step 2"),
            std::string::npos);
  const auto metrics = lines_of(run / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  for (const auto& l : metrics) EXPECT_EQ(l.back(), '}');
}

TEST(Train, DivergenceAtTheFirstStepSaysNothingWasRecordedAndKnowsClippingIsOn) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 20);
  cfg.mutable_model()->set_init_std(1e30f);  // the very first forward overflows
  cfg.mutable_optimizer()->set_grad_clip(1.0f);
  const std::string msg = training_error(cfg);
  EXPECT_NE(msg.find("training diverged at step 1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hold no training step yet"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("grad_clip"), std::string::npos) << msg;
}

TEST(Train, ANonEmptyRunDirectoryIsRefusedAndKeptUnlessOverwriting) {
  TempDir run;
  std::ostringstream log;
  train(small_run(run.path(), 3), log);
  const std::string metrics = data::testing::read_text(run / "metrics.jsonl");
  const std::string train_log = data::testing::read_text(run / "train.log");
  config::RunConfig again = small_run(run.path(), 5);
  const std::string msg = training_error(again);
  EXPECT_NE(msg.find(run.path().string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("is not empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  // Nothing of the first run was touched.
  EXPECT_EQ(data::testing::read_text(run / "metrics.jsonl"), metrics);
  EXPECT_EQ(data::testing::read_text(run / "train.log"), train_log);
  // A user file stays; the run's own files are replaced.
  data::testing::write_text(run / "notes.txt", "mine");
  TrainOptions overwrite;
  overwrite.overwrite = true;
  const TrainResult r = train(again, log, overwrite);
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(lines_of(run / "metrics.jsonl").size(), 5u + 1u + 1u);
  EXPECT_EQ(data::testing::read_text(run / "notes.txt"), "mine");
}

TEST(Train, ARunDirectoryInUseIsRefused) {
  TempDir run;
  const DirectoryLock holder(run.path(), "logging.run_dir");  // as another run would
  const std::string msg = training_error(small_run(run.path(), 3));
  EXPECT_NE(msg.find("is in use by another moetron run (pid " + std::to_string(getpid())),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("choose another logging.run_dir"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(run / "train.log"));
}

// (An error after start-up reaches train.log: Crashes.AFileSizeLimitIsAnErrorWithItsCause.)
TEST(Train, AModelThatDoesNotFitIsRefusedBeforeTheRunDirectoryChanges) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 3);
  // Passes every check of the config, and would need terabytes.
  cfg.mutable_model()->set_vocab_size(1 << 30);
  cfg.mutable_model()->set_hidden_size(4096);
  cfg.mutable_model()->set_num_attention_heads(32);
  std::ostringstream log;
  try {
    train(cfg, log);
    ADD_FAILURE() << "trained";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("does not fit: memory per rank (plan): params "), std::string::npos) << msg;
    EXPECT_NE(msg.find("(cpu)"), std::string::npos) << msg;
  }
  EXPECT_FALSE(std::filesystem::exists(run / "train.log"));
}

TEST(Train, WindowsLongerThanTheDataFailBeforeTheModelIsAllocated) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 3);
  // A model this size would not fit in memory; the data check must come first.
  cfg.mutable_data()->set_seq_len(1 << 28);
  const std::string msg = training_error(cfg);
  EXPECT_NE(msg.find("train split has"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(run / "train.log"));
}

TEST(Train, EveryCommandPrintsItsUsageForHelp) {
  for (const char* flag : {"--help", "-h"}) {
    using Command = std::function<int(std::span<const std::string>)>;
    for (const Command& command :
         {Command([](auto a) { return run_train(a); }), Command(run_validate),
          Command([](auto a) { return run_prepare(a); })}) {
      const std::vector<std::string> args{flag};
      ::testing::internal::CaptureStdout();
      const int rc = command(args);
      const std::string out = ::testing::internal::GetCapturedStdout();
      EXPECT_EQ(rc, 0) << flag;
      EXPECT_NE(out.find("usage: moetron "), std::string::npos) << out;
    }
  }
}

TEST(Train, VocabularyLargerThanTheModelIsRejectedBeforeTraining) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 2);
  cfg.mutable_model()->set_vocab_size(100);
  const std::string msg = training_error(cfg);
  EXPECT_NE(msg.find("model.vocab_size = 100"), std::string::npos) << msg;
}

TEST(Train, MoeRunRecordsExpertLoadAndItsPictureRenders) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 12);
  config::MoeConfig* moe = cfg.mutable_model()->mutable_moe();
  moe->set_n_routed_experts(4);
  moe->set_num_experts_per_tok(2);
  moe->set_moe_intermediate_size(16);
  moe->set_n_shared_experts(1);
  moe->set_first_k_dense_replace(1);
  moe->set_bias_update_speed(0.01f);
  moe->set_seq_aux_loss_alpha(0.001f);
  validate_config(cfg);
  std::ostringstream log;
  const TrainResult r = train(cfg, log);
  EXPECT_EQ(r.steps, 12);
  EXPECT_NE(log.str().find("| MaxVio "), std::string::npos) << log.str();
  const auto metrics = lines_of(run / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  // The MoE layers: main layer 1 and the MTP block (layer 2).
  for (const char* key : {"\"moe.model.layers.1.mlp.gate.counts\": [",
                          "\"moe.model.layers.2.mlp.gate.max_violation\"", "\"aux_loss\"",
                          "\"moe.model.layers.1.mlp.gate.entropy\"", "\"max_violation\""})
    EXPECT_NE(metrics.front().find(key), std::string::npos) << key << " in " << metrics.front();
  const std::string png = (run / "load.png").string();
  const std::string cmd = "/usr/bin/python3 " + std::string(MOETRON_SOURCE_DIR) +
                          "/bench/plot_expert_load.py " + (run / "metrics.jsonl").string() +
                          " -o " + png + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << " (needs python3-matplotlib: launch/setup.sh)";
  EXPECT_GT(std::filesystem::file_size(png), 1000u);
}

// The run's TensorBoard files hold every number of metrics.jsonl at its step and the expert-load
// heatmap at each validation, as an independent reader of the record format finds them
// (tests/reference/read_tfevents.py: CRC32C, the protobuf wire format, the PNG); a damaged byte
// fails its CRC; logging.tensorboard false writes none; a run resumed from an earlier
// checkpoint adds a file whose session start drops the steps it repeats.
TEST(Train, TensorBoardFilesHoldTheMetrics) {
  TempDir dir;
  const std::filesystem::path run = dir / "run";
  config::RunConfig cfg = testing::small_moe_run(run, 12);
  cfg.mutable_logging()->set_val_interval(6);
  cfg.mutable_checkpoint()->set_interval(6);
  std::ostringstream log;
  train(cfg, log);
  const std::string reader =
      "/usr/bin/python3 " + std::string(MOETRON_SOURCE_DIR) + "/tests/reference/read_tfevents.py ";
  EXPECT_EQ(std::system((reader + run.string()).c_str()), 0);
  // Resumed from step 6 up to step 10: a second file; the first's steps 7-12 are stale (11
  // and 12 are nowhere in metrics.jsonl any more), dropped by the session start.
  cfg.mutable_schedule()->set_total_steps(10);
  TrainOptions resume;
  resume.resume = true;
  resume.resume_from = "6";
  train(cfg, log, resume);
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(run / "tensorboard"))
    files.push_back(e.path());
  EXPECT_EQ(files.size(), 2u);
  EXPECT_EQ(std::system((reader + run.string()).c_str()), 0);
  // One byte changed in the middle of a record: its CRC no longer holds.
  {
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  EXPECT_NE(std::system((reader + run.string() + " > /dev/null").c_str()), 0);
  config::RunConfig off = testing::small_run(dir / "off", 2);
  off.mutable_logging()->set_tensorboard(false);
  train(off, log);
  EXPECT_FALSE(std::filesystem::exists(dir / "off" / "tensorboard"));
}

// Runs the real program on a long run, sends `sig` once it has trained a few steps, and
// checks that it stops cleanly with status 128 + sig and complete logs.
void expect_clean_stop_on(int sig) {
  TempDir run;
  config::RunConfig cfg = small_run(run / "out", 100000);
  cfg.mutable_logging()->set_val_interval(0);
  const std::filesystem::path config_file = run / "run.pbtxt";
  std::ofstream(config_file) << config_to_text(cfg);
  const pid_t pid =
      test::spawn({std::string(MOETRON_BINARY_DIR) + "/trainer/moetron", "train", config_file},
                  run / "stdout.txt");
  ASSERT_GE(pid, 0);
  // Wait until it has trained a few steps, then stop it the way a scheduler or a user would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines_of(run / "out/metrics.jsonl").size() < 3 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(kill(pid, sig), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 128 + sig);
  const std::string log = data::testing::read_text(run / "out/train.log");
  EXPECT_NE(log.find("stopping on signal " + std::to_string(sig) + " after step"),
            std::string::npos)
      << log;
  for (const auto& l : lines_of(run / "out/metrics.jsonl")) EXPECT_EQ(l.back(), '}');
}

TEST(Train, SigtermStopsARealRunCleanly) {
  expect_clean_stop_on(SIGTERM);
}
TEST(Train, SigintStopsARealRunCleanly) {
  expect_clean_stop_on(SIGINT);
}

TEST(Train, TooShortValidationSplitFailsBeforeTraining) {
  TempDir run;
  config::RunConfig cfg = small_run(run.path(), 5);
  const data::Dataset val(dataset_dir(), data::Split::val);
  const data::Dataset train_split(dataset_dir(), data::Split::train);
  ASSERT_LT(val.num_tokens() + 2, train_split.num_tokens());
  // A window one token longer than the whole validation split.
  cfg.mutable_data()->set_seq_len(static_cast<int>(val.num_tokens()) - 1);
  cfg.mutable_data()->set_micro_batch_size(1);
  const std::string msg = training_error(cfg);
  EXPECT_NE(msg.find("val split"), std::string::npos) << msg;
  EXPECT_TRUE(lines_of(run / "metrics.jsonl").empty());
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  config::ScheduleConfig s;
  s.set_kind(config::ScheduleConfig::COSINE);
  s.set_warmup_steps(10);
  s.set_total_steps(110);
  s.set_min_lr_ratio(0.1f);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 0), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 9), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 10), 1.0);
  EXPECT_NEAR(learning_rate(s, 1.0, 60), 0.55, 1e-8);  // min_lr_ratio is a float
  EXPECT_NEAR(learning_rate(s, 1.0, 110), 0.1, 1e-8);
}

TEST(Schedule, WarmupStableDecayAndConstant) {
  config::ScheduleConfig s;
  s.set_kind(config::ScheduleConfig::WARMUP_STABLE_DECAY);
  s.set_warmup_steps(10);
  s.set_total_steps(100);
  s.set_decay_fraction(0.2f);
  s.set_min_lr_ratio(0.0f);
  EXPECT_DOUBLE_EQ(learning_rate(s, 2.0, 50), 2.0);
  EXPECT_DOUBLE_EQ(learning_rate(s, 2.0, 79), 2.0);
  EXPECT_NEAR(learning_rate(s, 2.0, 89), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(s, 2.0, 99), 0.0, 1e-12);
  s.set_kind(config::ScheduleConfig::CONSTANT);
  EXPECT_DOUBLE_EQ(learning_rate(s, 2.0, 99), 2.0);
}

TEST(Schedule, MtpWeightChangesAtItsSteps) {
  config::ScheduleConfig s;
  s.set_mtp_loss_weight(0.3f);
  auto* c = s.add_mtp_loss_weight_changes();
  c->set_from_step(100);
  c->set_weight(0.1f);
  EXPECT_FLOAT_EQ(mtp_loss_weight(s, 99), 0.3f);
  EXPECT_FLOAT_EQ(mtp_loss_weight(s, 100), 0.1f);
}

}  // namespace
}  // namespace moetron
