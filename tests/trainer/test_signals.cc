// Stop signals under stress, with real processes: the real program is started over and over and
// sent SIGINT or SIGTERM at random moments of start-up, training and validation. Every run must
// end with status 128 + signal and leave a complete train.log and a valid metrics.jsonl.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "core/check.h"
#include "data/json.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"

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

}  // namespace
}  // namespace moetron
