// The directories a run writes are its own (docs/runs.md, "Who owns a directory"): a second run
// can neither prune, replace nor continue a live or finished run's checkpoints; --overwrite
// removes only what the run wrote, all of it or none; a failed --resume changes nothing and
// names a way out that loses nothing; a resume past the schedule or onto other data is refused.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "configs/config.h"
#include "core/check.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using data::testing::read_text;
using data::testing::TempDir;
using data::testing::write_text;

std::string train_error(const config::RunConfig& cfg, const TrainOptions& options = {}) {
  std::ostringstream log;
  try {
    train(cfg, log, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TrainOptions with(bool overwrite, bool resume, std::string resume_from = {}) {
  TrainOptions o;
  o.overwrite = overwrite;
  o.resume = resume;
  o.resume_from = std::move(resume_from);
  return o;
}

// Every file under `dir` and its bytes, the lock files (which hold a pid) aside.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != ".lock")
      out[e.path().lexically_relative(dir).string()] = read_text(e.path());
  return out;
}

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// The case: run A trains into runs/A with checkpoints every few steps; run B is pointed at
// A's checkpoint directory, first while A lives, then after it ended, with --overwrite, with
// --resume and keep_last 1. Before owner files, B deleted A's checkpoints and moved its latest.
TEST(Ownership, ASecondRunNeverTouchesAnotherRunsCheckpoints) {
  TempDir dir;
  config::RunConfig a = testing::small_run(dir / "A", 1000000);
  a.mutable_checkpoint()->set_interval(5);
  a.mutable_checkpoint()->set_keep_last(0);
  a.mutable_logging()->set_val_interval(0);
  a.set_threads(1);
  const fs::path a_config = dir / "a.pbtxt";
  std::ofstream(a_config) << config_to_text(a);
  const pid_t pid =
      test::spawn({test::moetron_binary(), "train", a_config.string()}, dir / "a.out");
  const fs::path a_ckpt = dir / "A" / "checkpoints";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(a_ckpt / "step-00000010.h5") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(a_ckpt / "step-00000010.h5")) << read_text(dir / "a.out");

  config::RunConfig b = testing::small_run(dir / "B", 3);
  b.mutable_checkpoint()->set_dir(a_ckpt.string());
  b.mutable_checkpoint()->set_keep_last(1);
  // While A lives: its owner file (checked before B would take A's lock: B leaves no trace).
  const std::string a_lock = read_text(a_ckpt / ".lock");
  for (const TrainOptions& o : {with(false, false), with(true, false), with(false, true)})
    EXPECT_HAS(train_error(b, o), "holds the checkpoints of another run");
  EXPECT_EQ(read_text(a_ckpt / ".lock"), a_lock);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const test::Exit end = test::wait_for(pid);
  ASSERT_TRUE(end.exited) << read_text(dir / "a.out");
  EXPECT_EQ(end.status, 128 + SIGTERM);
  const auto a_files = snapshot(dir / "A");
  // After A ended: its owner file, whatever B asks.
  for (const TrainOptions& o : {with(false, false), with(true, false), with(false, true)}) {
    const std::string msg = train_error(b, o);
    EXPECT_HAS(msg, "holds the checkpoints of another run (run directory " +
                        fs::absolute(dir / "A").lexically_normal().string());
    EXPECT_EQ(snapshot(dir / "A"), a_files);
  }
  // Nor can B use A's run directory as its checkpoint directory, or A's checkpoint directory as
  // its run directory.
  b.mutable_checkpoint()->set_dir((dir / "A").string());
  EXPECT_HAS(train_error(b, with(true, false)), "is the run directory of another run");
  config::RunConfig c = testing::small_run(a_ckpt, 3);
  EXPECT_HAS(train_error(c, with(true, false)), "is the checkpoint directory of another run");
  EXPECT_EQ(snapshot(dir / "A"), a_files);
  // A itself continues from its own latest: the checkpoint of the step SIGTERM stopped it at.
  const int64_t saved = std::stoll(read_text(a_ckpt / "latest").substr(5, 8));
  a.mutable_schedule()->set_total_steps(saved + 5);
  std::ostringstream log;
  EXPECT_EQ(train(a, log, with(false, true)).steps, saved + 5);
}

// Checkpoints no owner file claims (a run from before owner files): only that run continues
// them; another run is refused even with --resume (it adopted and pruned them before), and a
// refused run leaves nothing in the other run's directory, not even its pid in the lock file.
TEST(Ownership, UnclaimedCheckpointsAreContinuedOnlyByTheirOwnRun) {
  TempDir dir;
  config::RunConfig a = testing::small_run(dir / "A", 3);
  a.mutable_checkpoint()->set_interval(1);
  a.mutable_checkpoint()->set_keep_last(0);
  std::ostringstream log;
  train(a, log);
  fs::remove(dir / "A" / ".moetron-owner");  // as a build before owner files left it
  fs::remove(dir / "A" / "checkpoints" / ".moetron-owner");
  const auto a_files = snapshot(dir / "A");
  const std::string lock = read_text(dir / "A" / "checkpoints" / ".lock");
  config::RunConfig b = testing::small_run(dir / "B", 5);
  b.mutable_checkpoint()->set_dir((dir / "A" / "checkpoints").string());
  b.mutable_checkpoint()->set_keep_last(1);
  for (const TrainOptions& o : {with(true, false), with(false, true)}) {
    const std::string msg = train_error(b, o);
    EXPECT_HAS(msg, "that no run claims (no .moetron-owner); moetron neither adopts nor deletes");
    EXPECT_HAS(msg, "--resume-from");
  }
  EXPECT_EQ(snapshot(dir / "A"), a_files);
  EXPECT_EQ(read_text(dir / "A" / "checkpoints" / ".lock"), lock);
  // What the message offers: B continues from one of A's files in a directory of its own.
  b.mutable_checkpoint()->clear_dir();
  EXPECT_EQ(
      train(b, log, with(false, true, (dir / "A" / "checkpoints" / "step-00000002.h5").string()))
          .steps,
      5);
  EXPECT_EQ(snapshot(dir / "A"), a_files);
  // A itself continues its own.
  a.mutable_schedule()->set_total_steps(4);
  EXPECT_EQ(train(a, log, with(false, true)).steps, 4);
}

// --overwrite removes the files the earlier run wrote (config.pbtxt, train.log, metrics.jsonl,
// its checkpoints) and nothing else, and either all of them or none.
TEST(Ownership, OverwriteRemovesOnlyTheRunsFilesAllOrNone) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 3);
  cfg.mutable_checkpoint()->set_interval(1);
  std::ostringstream log;
  train(cfg, log);
  write_text(dir / "run" / "notes.txt", "mine");
  write_text(dir / "run" / "checkpoints" / "README", "about these checkpoints");
  const auto before = snapshot(dir / "run");
  // A removal that fails half-way (a file in the way of the move aside) puts back what it moved.
  write_text(dir / "run" / "checkpoints" / (".moetron-trash-" + std::to_string(getpid())), "x");
  const std::string msg = train_error(cfg, with(true, false));
  EXPECT_HAS(msg, "nothing of the earlier run was removed");
  fs::remove(dir / "run" / "checkpoints" / (".moetron-trash-" + std::to_string(getpid())));
  EXPECT_EQ(snapshot(dir / "run"), before);
  // Then it works, and the user's files stay.
  cfg.mutable_schedule()->set_total_steps(2);
  train(cfg, log, with(true, false));
  EXPECT_EQ(read_text(dir / "run" / "notes.txt"), "mine");
  EXPECT_EQ(read_text(dir / "run" / "checkpoints" / "README"), "about these checkpoints");
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoints" / "step-00000003.h5"));
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoints" / "step-00000002.h5"));
  for (const auto& e : fs::recursive_directory_iterator(dir.path()))
    EXPECT_FALSE(e.path().filename().string().starts_with(".moetron-trash")) << e.path();
}

// A checkpoint that fails to load: nothing in the run directory changes (config.pbtxt and
// metrics.jsonl stay as they were), and the message points at the checkpoints that remain,
// never at --overwrite, which would delete them. --resume-from takes one.
TEST(Ownership, AFailedResumeChangesNothingAndNamesAnotherCheckpoint) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 3);
  cfg.mutable_checkpoint()->set_interval(1);
  cfg.mutable_checkpoint()->set_keep_last(0);
  std::ostringstream log;
  train(cfg, log);
  const fs::path ckpt = dir / "run" / "checkpoints";
  {  // one value of the newest checkpoint changes
    const hid_t f = H5Fopen((ckpt / "step-00000003.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t ds = H5Dopen2(f, "/params/model.norm.weight", H5P_DEFAULT);
    const float v[32] = {7.0f};
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    H5Fclose(f);
  }
  config::RunConfig longer = cfg;
  longer.mutable_schedule()->set_total_steps(5);
  longer.mutable_optimizer()->set_lr(1e-3f);  // a changed config: config.pbtxt must not take it
  const std::string config_before = read_text(dir / "run" / "config.pbtxt");
  const std::string metrics_before = read_text(dir / "run" / "metrics.jsonl");
  const std::string msg = train_error(longer, with(false, true));
  EXPECT_HAS(msg, "does not match its checksum");
  EXPECT_HAS(msg, "--resume-from 2 continues from it");
  EXPECT_EQ(msg.find("--overwrite"), std::string::npos) << msg;
  EXPECT_EQ(read_text(dir / "run" / "config.pbtxt"), config_before);
  EXPECT_EQ(read_text(dir / "run" / "metrics.jsonl"), metrics_before);
  // --resume-from a step: the checkpoint of that step, metrics cut back to it.
  const TrainResult r = train(longer, log, with(false, true, "2"));
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(r.losses.size(), 3u);
  EXPECT_NE(read_text(dir / "run" / "config.pbtxt"), config_before);
  EXPECT_HAS(read_text(dir / "run" / "train.log"),
             "resumed from " + (ckpt / "step-00000002.h5").string());
  EXPECT_HAS(train_error(longer, with(false, true, "99")), "step-00000099.h5\" does not exist");
}

// A `latest` that cannot be used names what is wrong with it and the checkpoints beside it.
TEST(Ownership, ABadLatestNamesTheProblemAndTheWayOut) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 2);
  std::ostringstream log;
  train(cfg, log);
  const fs::path latest = dir / "run" / "checkpoints" / "latest";
  cfg.mutable_schedule()->set_total_steps(3);
  auto resume_error = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    std::string msg = train_error(cfg, with(false, true));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));  // never blocks
    EXPECT_EQ(msg.find("--overwrite"), std::string::npos) << msg;
    EXPECT_HAS(msg, "--resume-from 2 continues from it");
    return msg;
  };
  write_text(latest, "garbage\n");
  EXPECT_HAS(resume_error(), "does not name a checkpoint (it holds \"garbage\"");
  write_text(latest, "step-00000007.h5\n");
  EXPECT_HAS(resume_error(), "names step-00000007.h5, which does not exist");
  fs::remove(latest);
  EXPECT_HAS(resume_error(), "latest\" is missing");
  ASSERT_EQ(mkfifo(latest.c_str(), 0644), 0);  // a read would wait for a writer forever
  EXPECT_HAS(resume_error(), "is a FIFO, not a regular file");
  fs::remove(latest);
  fs::create_symlink("/dev/zero", latest);  // a read would never end
  EXPECT_HAS(resume_error(), "is a character device, not a regular file");
  fs::remove(latest);
  write_text(latest, std::string(1 << 20, 's'));
  EXPECT_HAS(resume_error(), "more than the 4096 such a file may hold");
}

// A start that was refused leaves nothing in the way of the next one: a --resume of a new
// directory (nothing to resume) and then a plain start into it, with checkpoint.dir elsewhere.
TEST(Ownership, ARefusedStartLeavesNothingInTheWay) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 2);
  EXPECT_HAS(train_error(cfg, with(false, true)), "holds no checkpoint");
  cfg.mutable_checkpoint()->set_dir((dir / "elsewhere").string());
  EXPECT_HAS(train_error(cfg, with(false, true)), "holds no checkpoint");
  std::ostringstream log;
  EXPECT_EQ(train(cfg, log).steps, 2);
  EXPECT_TRUE(fs::exists(dir / "elsewhere" / "step-00000002.h5"));
}

TEST(Ownership, ResumingPastTheScheduleOrOnOtherDataIsRefused) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 4);
  std::ostringstream log;
  train(cfg, log);
  config::RunConfig shorter = cfg;
  shorter.mutable_schedule()->set_total_steps(3);
  shorter.mutable_schedule()->set_warmup_steps(1);
  EXPECT_HAS(train_error(shorter, with(false, true)),
             "is at step 4, past schedule.total_steps = 3: raise schedule.total_steps");
  // At the end of its schedule: nothing to do, said so.
  const TrainResult done = train(cfg, log, with(false, true));
  EXPECT_EQ(done.steps, 4);
  EXPECT_TRUE(done.losses.empty());
  EXPECT_HAS(read_text(dir / "run" / "train.log"), "the run is already complete (step 4");
  // The same directory name, prepared again from other text.
  data::PrepareOptions p;
  p.inputs = {data::testing::write_generated_corpus(dir / "other-text", 24, 300, 99)};
  p.output = dir / "other";
  p.val_fraction = 0.3;
  data::prepare_dataset(p);
  config::RunConfig other = cfg;
  other.mutable_schedule()->set_total_steps(6);
  other.mutable_data()->set_dataset_dir((dir / "other").string());
  const std::string msg = train_error(other, with(false, true));
  EXPECT_HAS(msg, "was trained on the dataset tokens:");
  EXPECT_HAS(msg, "--allow-data-change");
  TrainOptions allow = with(false, true);
  allow.allow_data_change = true;
  EXPECT_EQ(train(other, log, allow).steps, 6);
  EXPECT_HAS(read_text(dir / "run" / "train.log"), "note: the dataset changed");
}

}  // namespace
}  // namespace moetron
