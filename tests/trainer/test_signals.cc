// Stop signals under stress, with real processes: the real program is started over and over and
// sent SIGINT or SIGTERM at random moments of start-up, training and validation. Every run must
// end with status 128 + signal and leave a complete train.log and a valid metrics.jsonl.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "configs/config.h"
#include "core/check.h"
#include "data/json.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/checkpoint_names.h"

namespace moetron {
namespace {

using data::testing::TempDir;
using namespace std::chrono_literals;

// Where a run was when the signal arrived, as its log tells it.
enum class Phase { before_log, start_up, training, validation };
const char* phase_name(Phase p) {
  switch (p) {
    case Phase::before_log:
      return "before the log existed";
    case Phase::start_up:
      return "start-up";
    case Phase::training:
      return "training";
    case Phase::validation:
      return "validation";
  }
  return "?";
}

pid_t start_training(const std::filesystem::path& config, const std::filesystem::path& out) {
  return test::spawn({std::string(MOETRON_BINARY_DIR) + "/trainer/moetron", "train", config}, out);
}

// Waits until `file` has at least `lines` lines (or 60 s pass).
void wait_for_lines(const std::filesystem::path& file, size_t lines) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (testing::lines_of(file).size() < lines && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(2ms);
}

// Checks one stopped run's files; returns the phase the signal hit.
Phase check_run_files(const std::filesystem::path& run_dir, int sig) {
  const std::filesystem::path log_file = run_dir / "train.log";
  if (!std::filesystem::exists(log_file)) return Phase::before_log;
  const std::string log = data::testing::read_text(log_file);
  EXPECT_TRUE(!log.empty() && log.back() == '\n') << "train.log ends mid-line:\n" << log;
  const auto lines = testing::lines_of(log_file);
  size_t stop_line = lines.size();
  for (size_t i = 0; i < lines.size(); ++i)
    if (lines[i].starts_with("stopping on signal " + std::to_string(sig))) stop_line = i;
  EXPECT_LT(stop_line, lines.size()) << "no stop line for signal " << sig << ":\n" << log;
  EXPECT_TRUE(lines.back().starts_with("done: ")) << log;

  const std::filesystem::path metrics_file = run_dir / "metrics.jsonl";
  const std::string metrics = data::testing::read_text(metrics_file);
  EXPECT_TRUE(metrics.empty() || metrics.back() == '\n') << "metrics.jsonl ends mid-line";
  int64_t expected_step = 1;
  for (const std::string& line : testing::lines_of(metrics_file)) {
    try {
      const data::JsonValue record = data::parse_json(line, metrics_file.string());
      if (record.at("kind").as_string() == "train") {
        EXPECT_EQ(record.at("step").as_u64(), static_cast<uint64_t>(expected_step++));
      }
    } catch (const Error& e) {
      ADD_FAILURE() << "invalid metrics line: " << e.what() << "\n" << line;
    }
  }
  // The stop line names the last step recorded, and a checkpoint of it was saved.
  const int64_t last = expected_step - 1;
  if (stop_line < lines.size()) {
    const std::string& stop = lines[stop_line];
    if (last == 0) {
      EXPECT_NE(stop.find("before the first step"), std::string::npos) << stop;
    } else {
      EXPECT_NE(stop.find(" after step " + std::to_string(last) + " of "), std::string::npos)
          << stop << "\nthe last train record is step " << last;
      EXPECT_NE(log.find("checkpoint step " + std::to_string(last) + " (stopped by a signal) -> "),
                std::string::npos)
          << log;
      EXPECT_EQ(data::testing::read_text(run_dir / "checkpoints" / "latest"),
                checkpoint_name(last) + "\n");
    }
  }
  if (stop_line == 0 || stop_line >= lines.size()) return Phase::start_up;
  const std::string& before = lines[stop_line - 1];
  if (before.starts_with("val ")) return Phase::validation;
  return before.starts_with("step ") ? Phase::training : Phase::start_up;
}

// Runs `runs` trainings and stops each with `sig`: a third while starting up, a third while
// training, a third around validation.
void stress(int sig, int runs, uint64_t seed) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "unused", 1000000);
  cfg.set_threads(1);
  cfg.mutable_logging()->set_log_interval(1);
  cfg.mutable_logging()->set_val_batches(100);  // validation takes most of the time
  std::mt19937_64 gen(seed);
  std::map<Phase, int> seen;
  for (int i = 0; i < runs; ++i) {
    const std::filesystem::path run_dir = dir / ("run" + std::to_string(i));
    cfg.mutable_logging()->set_run_dir(run_dir.string());
    // The training third runs no validation: under load, ten fast steps and the jitter could
    // otherwise carry every one of its signals into the first validation.
    cfg.mutable_logging()->set_val_interval(i % 3 == 1 ? 1000000 : 10);
    const std::filesystem::path config = dir / ("run" + std::to_string(i) + ".pbtxt");
    std::ofstream(config) << config_to_text(cfg);
    const pid_t pid = start_training(config, dir / ("out" + std::to_string(i) + ".txt"));
    ASSERT_GT(pid, 0);
    std::uniform_int_distribution<int> jitter_us(0, 300'000);
    if (i % 3 == 1) wait_for_lines(run_dir / "metrics.jsonl", 1);   // training has begun
    if (i % 3 == 2) wait_for_lines(run_dir / "metrics.jsonl", 11);  // a validation has run
    std::this_thread::sleep_for(std::chrono::microseconds(jitter_us(gen)));
    ASSERT_EQ(kill(pid, sig), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    const Phase phase = check_run_files(run_dir, sig);
    ++seen[phase];
    const std::string out = data::testing::read_text(dir / ("out" + std::to_string(i) + ".txt"));
    if (phase == Phase::before_log && WIFSIGNALED(status)) {
      // Before main() blocked the signals, its default action ends the process; a shell
      // reports that as 128 + signal too.
      EXPECT_EQ(WTERMSIG(status), sig) << "run " << i;
      continue;
    }
    ASSERT_TRUE(WIFEXITED(status)) << "run " << i << " (" << phase_name(phase)
                                   << ") was killed by signal " << WTERMSIG(status) << "\n"
                                   << out;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig) << "run " << i << " (" << phase_name(phase) << ")\n"
                                              << out;
  }
  std::string summary;
  for (const auto& [phase, n] : seen)
    summary += std::string(phase_name(phase)) + ": " + std::to_string(n) + "; ";
  std::cout << "signal " << sig << " hit " << summary << std::endl;
  EXPECT_GT(seen[Phase::training], 0) << summary;
  EXPECT_GT(seen[Phase::validation], 0) << summary;
  EXPECT_GT(seen[Phase::start_up] + seen[Phase::before_log], 0) << summary;
}

TEST(StopSignals, SigintAtSixteenRandomMomentsAlwaysStopsCleanly) {
  stress(SIGINT, 16, 1);
}

TEST(StopSignals, SigtermAtSixteenRandomMomentsAlwaysStopsCleanly) {
  stress(SIGTERM, 16, 2);
}

// A second signal ends the run at once: in the middle of a step that takes over a second, the
// process is gone well before the step could have finished, with 128 + signal, and nothing of
// the unfinished step was recorded.
TEST(StopSignals, ASecondSignalEndsTheRunAtOnce) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 100);
  config::ModelConfig* m = cfg.mutable_model();
  m->set_hidden_size(512);
  m->set_num_hidden_layers(4);
  m->set_intermediate_size(2048);
  cfg.mutable_data()->set_seq_len(256);
  cfg.mutable_data()->set_micro_batch_size(8);
  cfg.mutable_logging()->set_log_interval(1);
  cfg.mutable_logging()->set_val_interval(0);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  const pid_t pid = start_training(config, dir / "out.txt");
  wait_for_lines(dir / "run" / "metrics.jsonl", 1);  // step 1 done: step 2 runs now
  const auto step_start = std::chrono::steady_clock::now();
  wait_for_lines(dir / "run" / "metrics.jsonl", 2);  // how long a step takes
  const double step_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
  ASSERT_GT(step_s, 0.5) << "steps too fast to tell a stop at once from one after the step";
  std::this_thread::sleep_for(std::chrono::duration<double>(step_s / 4));  // inside step 3
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const test::Exit e = test::wait_for(pid, 30s);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(e.exited) << data::testing::read_text(dir / "out.txt");
  EXPECT_EQ(e.status, 128 + SIGTERM);
  EXPECT_LT(took, step_s / 2) << "a step takes " << step_s << " s";
  EXPECT_EQ(testing::lines_of(dir / "run" / "metrics.jsonl").size(), 2u);
  EXPECT_NE(data::testing::read_text(dir / "out.txt").find("second stop signal: exiting now"),
            std::string::npos);
}

// The pid of `rank` among mpirun's children (Open MPI names it in each rank's environment).
pid_t rank_pid(pid_t mpirun, int rank) {
  FILE* p =
      popen(("pgrep -P " + std::to_string(mpirun) + " -f 'trainer/moetron train'").c_str(), "r");
  std::vector<long> children;
  for (long pid = 0; p && fscanf(p, "%ld", &pid) == 1;) children.push_back(pid);
  if (p) pclose(p);
  const std::string wanted = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const long pid : children) {
    const std::string environ =
        data::testing::read_text("/proc/" + std::to_string(pid) + "/environ");
    for (size_t at = 0; at < environ.size();) {
      const size_t end = std::min(environ.find('\0', at), environ.size());
      if (environ.compare(at, end - at, wanted) == 0) return static_cast<pid_t>(pid);
      at = end + 1;
    }
  }
  return 0;
}

// Under mpirun: a signal to one rank, or to mpirun (which passes it to every rank), stops every
// rank after the same step with a checkpoint of it, the metrics complete up to there. A SIGINT
// to rank 1 alone is named by rank 0's log, and every rank exits with 130, so mpirun does too.
TEST(StopSignals, UnderMpirunEveryRankStopsAfterTheSameStepWithACheckpoint) {
  for (const bool to_launcher : {false, true}) {
    SCOPED_TRACE(to_launcher ? "SIGTERM to mpirun" : "SIGINT to rank 1");
    const int sig = to_launcher ? SIGTERM : SIGINT;
    TempDir dir;
    config::RunConfig cfg = testing::small_run(dir / "run", 1000000);
    cfg.mutable_parallel()->set_tp(2);
    cfg.mutable_logging()->set_val_interval(0);
    cfg.set_threads(1);
    const std::filesystem::path config = dir / "run.pbtxt";
    std::ofstream(config) << config_to_text(cfg);
    const pid_t job = test::spawn({"mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2",
                                   test::moetron_binary(), "train", config.string()},
                                  dir / "out.txt");
    wait_for_lines(dir / "run" / "metrics.jsonl", 3);
    const pid_t target = to_launcher ? job : rank_pid(job, 1);
    ASSERT_NE(target, 0) << "no rank 1 among mpirun's children";
    ASSERT_EQ(kill(target, sig), 0);
    const test::Exit e = test::wait_for(job, 60s);
    const std::string out = data::testing::read_text(dir / "out.txt");
    ASSERT_FALSE(e.timed_out) << out;
    EXPECT_EQ(check_run_files(dir / "run", sig), Phase::training) << out;
    if (!to_launcher) {  // mpirun itself exits with 1 when it is signalled (see below)
      EXPECT_TRUE(e.exited) << out;
      EXPECT_EQ(e.status, 128 + sig) << out;
    }
  }
}

// Open MPI's mpirun exits with 1 when it is signalled itself, whatever the ranks did;
// launch/mpirun.sh passes the signal to the ranks instead, so a preempted job exits with 143
// (a scheduler tells it from a failure) and still checkpoints; SIGINT gives 130.
TEST(StopSignals, TheMpirunLauncherExitsWithTheSignalsStatus) {
  for (const int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    TempDir dir;
    config::RunConfig cfg = testing::small_run(dir / "run", 1000000);
    cfg.mutable_logging()->set_val_interval(0);
    const std::filesystem::path config = dir / "run.pbtxt";
    std::ofstream(config) << config_to_text(cfg);
    const std::string launcher = std::string(MOETRON_SOURCE_DIR) + "/launch/mpirun.sh";
    const pid_t job = test::spawn(
        {"env", "MOETRON_OVERSUBSCRIBE=1", "BUILD_DIR=" + std::string(MOETRON_BINARY_DIR), launcher,
         "-n", "2", "-t", "1", config.string()},
        dir / "out.txt");
    wait_for_lines(dir / "run" / "metrics.jsonl", 3);
    ASSERT_EQ(kill(job, sig), 0);  // env has exec'd the script: the job is the launcher
    const test::Exit e = test::wait_for(job, 60s);
    const std::string out = data::testing::read_text(dir / "out.txt");
    ASSERT_FALSE(e.timed_out) << out;
    EXPECT_TRUE(e.exited) << out;
    EXPECT_EQ(e.status, 128 + sig) << out;
    EXPECT_EQ(check_run_files(dir / "run", sig), Phase::training) << out;
  }
}

}  // namespace
}  // namespace moetron
