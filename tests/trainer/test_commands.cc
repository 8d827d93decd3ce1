// Every command stops on the first signal, and none dies without a word: real processes, real
// signals, real resource limits (docs/runs.md, "Stopping"; "Errors").
//  - generate streams its tokens and stops at the next one with 130/143; export, prepare and
//    inspect stop at their next block, leaving their output as it was;
//  - a write past `ulimit -f` (or a full disk) is an error with its cause, not SIGXFSZ (153) or a
//    crash in HDF5's exit handler (139), and no partial checkpoint is left behind;
//  - extreme arguments are refused with their valid range.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "checkpoint/export.h"
#include "checkpoint/inspect.h"
#include "configs/config.h"
#include "core/check.h"
#include "core/stop.h"
#include "data/prepare.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/cli/commands.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using data::testing::read_text;
using data::testing::TempDir;

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// A trained run shared by the tests of this file.
const fs::path& trained_run() {
  static TempDir dir;
  static const fs::path run = [] {
    config::RunConfig cfg = testing::small_moe_run(dir / "run", 3);  // glm4_moe needs experts
    std::ostringstream log;
    train(cfg, log);
    return dir / "run";
  }();
  return run;
}

void wait_until(const std::function<bool()>& ready, std::chrono::milliseconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!ready() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
}

// A long generation prints as it goes and ends at the first SIGINT or SIGTERM, promptly.
TEST(CommandSignals, GenerateStreamsAndStopsOnTheFirstSignal) {
  TempDir dir;
  for (const int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(sig);
    const std::string n = std::to_string(sig);
    const fs::path out = dir / ("out" + n + ".txt"), err = dir / ("err" + n + ".txt");
    const pid_t pid =
        test::spawn({test::moetron_binary(), "generate", trained_run().string(), "--prompt", "The ",
                     "--max-tokens", "1000000", "--tokenizer", testing::dataset_dir().string()},
                    out, {}, err);
    wait_until([&] { return fs::exists(out) && fs::file_size(out) >= 20; });
    ASSERT_GE(fs::file_size(out), 20u) << "no streamed text:\n" << read_text(err);
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(pid, sig), 0);
    const test::Exit e = test::wait_for(pid, 10s);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(e.exited) << "signal " << e.signal << " timed out " << e.timed_out << "\n"
                          << read_text(err);
    EXPECT_EQ(e.status, 128 + sig) << read_text(err);
    EXPECT_LT(took, 2.0);
    EXPECT_HAS(read_text(err), "moetron generate: stopped by signal " + std::to_string(sig));
  }
}

// prepare, with the signal mid-way through a large corpus: 143, the old dataset whole, no
// staging directory left.
TEST(CommandSignals, PrepareStopsAndKeepsTheDatasetItWasReplacing) {
  TempDir dir;
  for (int f = 0; f < 8; ++f)
    data::testing::write_text(dir / "big" / ("part" + std::to_string(f) + ".txt"),
                              data::testing::generated_corpus(30000, f + 3));
  data::PrepareOptions small;
  small.inputs = {data::testing::write_generated_corpus(dir / "small", 4, 100, 1)};
  small.output = dir / "out";
  small.val_fraction = 0.3;
  data::prepare_dataset(small);
  const std::string manifest = read_text(dir / "out" / "manifest.json");
  const pid_t pid =
      test::spawn({test::moetron_binary(), "prepare", "--input", (dir / "big").string(), "--output",
                   (dir / "out").string(), "--shard-tokens", "20000", "--overwrite"},
                  dir / "prepare.txt");
  // Once its staging directory holds a shard it is past its checks, reading and writing.
  const fs::path staging = dir / ("out.partial-" + std::to_string(pid));
  wait_until([&] { return fs::exists(staging / "train-00000.bin"); });
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const test::Exit e = test::wait_for(pid, 10s);
  ASSERT_TRUE(e.exited);
  const std::string text = read_text(dir / "prepare.txt");
  EXPECT_EQ(e.status, 128 + SIGTERM) << text;
  EXPECT_HAS(text, "stopped by signal 15; the output directory is as it was before");
  EXPECT_EQ(read_text(dir / "out" / "manifest.json"), manifest);
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos)
        << entry.path();
}

// The same stops in process: a stop request raised between blocks throws Stopped, and the output
// is as it was (export, prepare), or nothing was written (inspect).
TEST(CommandSignals, ExportPrepareAndInspectStopBetweenBlocks) {
  TempDir dir;
  std::atomic<int> request{0};
  const StopToken stop(&request);
  const fs::path ckpt = trained_run() / "checkpoints" / "step-00000003.h5";
  checkpoint::ExportOptions o;
  o.checkpoint = ckpt;
  o.out = dir / "hf";
  o.shard_size = 4096;  // many shards: a stop after the first
  o.dataset = testing::dataset_dir();
  o.stop = stop;
  EXPECT_THROW(checkpoint::export_checkpoint(o, [&](const std::string&) { request = SIGTERM; }),
               Stopped);
  EXPECT_FALSE(fs::exists(dir / "hf"));
  request = SIGTERM;  // from the start now
  data::PrepareOptions p;
  p.inputs = {data::testing::write_generated_corpus(dir / "corpus", 4, 100, 1)};
  p.output = dir / "ds";
  p.stop = stop;
  EXPECT_THROW(data::prepare_dataset(p), Stopped);
  EXPECT_FALSE(fs::exists(dir / "ds"));
  std::ostringstream out;
  EXPECT_THROW(checkpoint::inspect(ckpt, out, false, stop), Stopped);
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos)
        << entry.path();
}

// Under `ulimit -f` the first checkpoint cannot be written: the run stops with the cause in its
// message and in train.log, status 1 (it died by SIGXFSZ, 153, before; and a full disk crashed
// in HDF5's exit handler, 139), and no partial file is left to fill the disk.
TEST(Crashes, AFileSizeLimitIsAnErrorWithItsCause) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 4);
  cfg.mutable_checkpoint()->set_interval(2);
  cfg.mutable_logging()->set_val_interval(0);
  const fs::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  const test::Exit e = test::run_moetron({"train", config.string()}, dir / "out.txt",
                                         test::limit(RLIMIT_FSIZE, 256 << 10));
  const std::string out = read_text(dir / "out.txt");
  ASSERT_TRUE(e.exited) << "killed by signal " << e.signal << "\n" << out;
  EXPECT_EQ(e.status, 1) << out;
  EXPECT_HAS(out, "checkpoint step 2 could not be written");
  EXPECT_HAS(out, "File too large");
  const auto log = testing::lines_of(dir / "run" / "train.log");
  ASSERT_FALSE(log.empty());
  EXPECT_HAS(log.back(), "error: checkpoint step 2 could not be written");
  EXPECT_HAS(log.back(), "no checkpoint of this run was kept");
  for (const auto& entry : fs::directory_iterator(dir / "run" / "checkpoints"))
    EXPECT_FALSE(entry.path().string().ends_with(".partial")) << entry.path();

  // export and prepare the same way.
  const test::Exit x =
      test::run_moetron({"export", trained_run().string(), "--out", (dir / "hf").string(),
                         "--dtype", "fp32", "--dataset", testing::dataset_dir().string()},
                        dir / "export.txt", test::limit(RLIMIT_FSIZE, 64 << 10));
  ASSERT_TRUE(x.exited) << "killed by signal " << x.signal;
  EXPECT_EQ(x.status, 1) << read_text(dir / "export.txt");
  EXPECT_HAS(read_text(dir / "export.txt"), "File too large");
  EXPECT_FALSE(fs::exists(dir / "hf"));
  data::testing::write_text(dir / "text" / "a.txt", data::testing::generated_corpus(20000, 5));
  const test::Exit pr = test::run_moetron(
      {"prepare", "--input", (dir / "text").string(), "--output", (dir / "ds").string()},
      dir / "prepare.txt", test::limit(RLIMIT_FSIZE, 64 << 10));
  ASSERT_TRUE(pr.exited) << "killed by signal " << pr.signal;
  EXPECT_EQ(pr.status, 1) << read_text(dir / "prepare.txt");
  EXPECT_HAS(read_text(dir / "prepare.txt"), "File too large");
}

// Arguments beyond what can work are refused with the valid range, never a crash (100000
// threads crashed libgomp; 2^60 tokens overflowed the RoPE tables).
TEST(Crashes, ExtremeArgumentsAreRefusedWithTheirRange) {
  TempDir dir;
  const std::string run = trained_run().string(), data = testing::dataset_dir().string();
  struct Case {
    std::vector<std::string> args;
    const char* why;
  };
  const std::vector<Case> cases = {
      {{"generate", run, "--prompt", "x", "--threads", "100000"},
       "--threads 100000 is out of range: [0, 1024]"},
      {{"generate", run, "--prompt", "x", "--max-tokens", "1152921504606846976"},
       "--max-tokens 1152921504606846976 is out of range: [1, 1048576]"},
      {{"generate", run, "--prompt", "x", "--max-tokens", "99999999999999999999999"},
       "--max-tokens 99999999999999999999999 is out of range (at most 9223372036854775807)"},
      {{"train", (trained_run() / "config.pbtxt").string(), "--set", "threads=100000"},
       "threads = 100000: must be in [0, 1024]"},
      {{"prepare", "--input", data, "--output", (dir / "x").string(), "--shard-tokens", "-3"},
       "--shard-tokens expects a whole number >= 0, got \"-3\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args[0] + " " + c.args.back());
    const test::Exit e = test::run_moetron(c.args, dir / "out.txt");
    const std::string out = read_text(dir / "out.txt");
    ASSERT_TRUE(e.exited) << "killed by signal " << e.signal << "\n" << out;
    EXPECT_EQ(e.status, 1) << out;
    EXPECT_HAS(out, c.why);
  }
}

// The system's own reason reaches the user, not a guess: a path through a regular file is "Not a
// directory", not "missing, truncated or not a checkpoint".
TEST(Messages, TheRealCauseIsNamed) {
  TempDir dir;
  data::testing::write_text(dir / "file", "x");
  std::ostringstream out;
  try {
    checkpoint::inspect(dir / "file" / "step-00000001.h5", out);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "cannot be read: Not a directory");
  }
  // A std::filesystem error reads as the operation, the path and the reason.
  const test::Exit e =
      test::run_moetron({"export", trained_run().string(), "--out", (dir / "file" / "hf").string(),
                         "--dataset", testing::dataset_dir().string()},
                        dir / "export.txt");
  EXPECT_EQ(e.status, 1);
  EXPECT_HAS(read_text(dir / "export.txt"), "moetron export: error: cannot create directories \"" +
                                                (dir / "file").string() + "\": Not a directory");
  if (geteuid() != 0) {  // root reads whatever the permissions say
    const fs::path locked = dir / "locked.h5";
    fs::copy_file(trained_run() / "checkpoints" / "step-00000003.h5", locked);
    fs::permissions(locked, fs::perms::none);
    try {
      checkpoint::inspect(locked, out);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_HAS(std::string(e.what()), "cannot be read: Permission denied");
    }
  }
}

}  // namespace
}  // namespace moetron
