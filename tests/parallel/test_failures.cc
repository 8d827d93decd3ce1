// How a parallel job fails, with real processes under mpirun: an error on one rank ends the
// whole job within seconds with that rank's message printed once; a rank killed with SIGKILL
// takes the job down; errors every rank sees (a bad layout, ranks started with different
// configs) are printed once, by rank 0.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "data/json.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"

namespace moetron {
namespace {

using data::testing::TempDir;
using namespace std::chrono_literals;

const std::string kMoetron = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";

struct Job {
  pid_t pid = -1;
  std::filesystem::path output;
};

// mpirun with `args` (after the launcher's own flags), output to `output`.
Job start_mpirun(const std::vector<std::string>& args, const std::filesystem::path& output) {
  std::vector<std::string> argv{"mpirun", "--oversubscribe", "--allow-run-as-root"};
  argv.insert(argv.end(), args.begin(), args.end());
  return {test::spawn(std::move(argv), output), output};
}

// Waits for the job up to `limit`; returns its wait status, or -1 after killing it on timeout.
int wait_for(const Job& job, std::chrono::seconds limit, double* seconds = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::steady_clock::now() - start < limit) {
    if (waitpid(job.pid, &status, WNOHANG) == job.pid) {
      if (seconds)
        *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return status;
    }
    std::this_thread::sleep_for(20ms);
  }
  kill(-job.pid, SIGKILL);
  waitpid(job.pid, &status, 0);
  return -1;
}

// Whether `pid` still runs (a zombie left for its reaper does not).
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  if (!(stat >> pid_field >> comm >> state)) return false;
  return state != "Z" && state != "X";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::filesystem::path write_config(const TempDir& dir, int64_t steps) {
  config::RunConfig cfg = testing::small_run(dir / "run", static_cast<int>(steps));
  cfg.set_threads(1);
  std::filesystem::path file = dir / "run.pbtxt";
  std::ofstream(file) << config_to_text(cfg);
  return file;
}

TEST(ParallelFailure, AnErrorOnOneRankEndsTheJobAndIsPrintedOnce) {
  TempDir dir;
  const Job job =
      start_mpirun({"-np", "2", std::string(MOETRON_BINARY_DIR) + "/tests/parallel/fault_program"},
                   dir / "out.txt");
  double seconds = 0;
  const int status = wait_for(job, 60s, &seconds);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_NE(status, -1) << "the job hung:\n" << out;
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_LT(seconds, 10.0) << out;
  EXPECT_EQ(count(out, "moetron fault: rank 1: error: injected fault on rank 1"), 1u) << out;
}

TEST(ParallelFailure, KillingOneRankEndsTheJob) {
  TempDir dir;
  const auto config = write_config(dir, 1000000);
  const Job job = start_mpirun({"-np", "2", kMoetron, "train", config.string()}, dir / "out.txt");
  // Wait until both ranks train (rank 0 writes metrics), then kill one of them.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (testing::lines_of(dir / "run" / "metrics.jsonl").size() < 3 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  const std::string ranks = "pgrep -P " + std::to_string(job.pid) + " -f 'trainer/moetron train'";
  std::vector<pid_t> pids;
  if (FILE* p = popen(ranks.c_str(), "r")) {
    for (long pid = 0; fscanf(p, "%ld", &pid) == 1;) pids.push_back(static_cast<pid_t>(pid));
    pclose(p);
  }
  ASSERT_EQ(pids.size(), 2u) << data::testing::read_text(job.output);
  ASSERT_EQ(kill(pids.back(), SIGKILL), 0);
  double seconds = 0;
  const int status = wait_for(job, 60s, &seconds);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_NE(status, -1) << "the job hung after a rank was killed:\n" << out;
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_LT(seconds, 15.0) << out;
  // The others end with the job (mpirun's SIGTERM, then SIGKILL): give them a few seconds.
  const auto until = std::chrono::steady_clock::now() + 10s;
  auto any_running = [&] {
    return std::any_of(pids.begin(), pids.end(), [](pid_t p) { return running(p); });
  };
  while (any_running() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  for (pid_t pid : pids)
    EXPECT_FALSE(running(pid)) << "rank process " << pid << " outlived the job by 10 s";
}

TEST(ParallelFailure, ALayoutThatDoesNotFitIsPrintedOnce) {
  TempDir dir;
  const auto config = write_config(dir, 5);
  const Job job = start_mpirun(
      {"-np", "2", kMoetron, "train", config.string(), "--set", "parallel.dp=4"}, dir / "out.txt");
  const int status = wait_for(job, 60s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_EQ(count(out,
                  "moetron train: error: parallel.dp x parallel.tp = 4 x 1 = 4 ranks, but 2 ranks "
                  "were started"),
            1u)
      << out;
  EXPECT_FALSE(std::filesystem::exists(dir / "run" / "train.log"));
}

TEST(ParallelFailure, RanksStartedWithDifferentConfigsAreRefused) {
  TempDir dir;
  const auto config = write_config(dir, 5);
  // MPMD: rank 1 gets one more override than rank 0.
  const Job job = start_mpirun({"-np", "1", kMoetron, "train", config.string(), ":", "-np", "1",
                                kMoetron, "train", config.string(), "--set", "seed=99"},
                               dir / "out.txt");
  const int status = wait_for(job, 60s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_EQ(
      count(out, "moetron train: error: rank 1: was started with a different config than rank 0"),
      1u)
      << out;
  EXPECT_NE(out.find("this rank \"seed: 99\""), std::string::npos) << out;
}

TEST(ParallelFailure, AConfigMissingOnOneRankStopsEveryRankOnce) {
  TempDir dir;
  const auto config = write_config(dir, 5);
  const std::string missing = (dir / "elsewhere.pbtxt").string();
  const Job job = start_mpirun(
      {"-np", "1", kMoetron, "train", config.string(), ":", "-np", "1", kMoetron, "train", missing},
      dir / "out.txt");
  const int status = wait_for(job, 60s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_NE(status, -1) << "the job hung:\n" << out;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_EQ(count(out, "rank 1: "), 1u) << out;
  EXPECT_EQ(count(out, missing), 1u) << out;
}

TEST(ParallelFailure, AMissingDatasetOnOneRankStopsEveryRankOnce) {
  TempDir dir;
  const auto config = write_config(dir, 5);
  const Job job = start_mpirun({"-np", "2", kMoetron, "train", config.string(), "--set",
                                "data.dataset_dir=" + (dir / "nowhere").string()},
                               dir / "out.txt");
  const int status = wait_for(job, 60s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_EQ(count(out, "is not a prepared dataset"), 1u) << out;
}

// The validation losses of metrics.jsonl, in order.
std::vector<double> val_losses(const std::filesystem::path& metrics) {
  std::vector<double> out;
  for (const std::string& line : testing::lines_of(metrics)) {
    const size_t at = line.find("\"val_loss\": ");
    if (at != std::string::npos) out.push_back(std::stod(line.substr(at + 12)));
  }
  return out;
}

// logging.val_sequences: one rank with micro-batches of 4 and two data-parallel ranks with
// micro-batches of 2 validate on the same 8 windows (their training agrees to fp32 rounding
// too: the same global batch), and a layout whose rounds cannot cover them exactly is refused
// with the valid counts.
TEST(ParallelTraining, ValidationWindowsDoNotDependOnTheLayout) {
  TempDir dir;
  auto run = [&](const std::string& name, int ranks, int micro_batch) {
    config::RunConfig cfg = testing::small_run(dir / name, 10);
    cfg.set_threads(1);
    cfg.mutable_data()->set_micro_batch_size(micro_batch);
    cfg.mutable_logging()->set_val_interval(5);
    cfg.mutable_logging()->set_val_sequences(8);
    const std::filesystem::path config = dir / (name + ".pbtxt");
    std::ofstream(config) << config_to_text(cfg);
    const Job job = start_mpirun({"-np", std::to_string(ranks), kMoetron, "train", config.string()},
                                 dir / (name + ".out"));
    const int status = wait_for(job, 120s);
    return std::pair{status, data::testing::read_text(job.output)};
  };
  const auto [one_status, one_out] = run("one", 1, 4);
  const auto [two_status, two_out] = run("two", 2, 2);
  ASSERT_TRUE(WIFEXITED(one_status) && WEXITSTATUS(one_status) == 0) << one_out;
  ASSERT_TRUE(WIFEXITED(two_status) && WEXITSTATUS(two_status) == 0) << two_out;
  EXPECT_NE(one_out.find("(8 windows per evaluation)"), std::string::npos) << one_out;
  const std::vector<double> one = val_losses(dir / "one" / "metrics.jsonl");
  const std::vector<double> two = val_losses(dir / "two" / "metrics.jsonl");
  ASSERT_EQ(one.size(), 2u);
  ASSERT_EQ(two.size(), 2u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(two[i], one[i], 1e-5 * one[i]) << i;
  const auto [bad_status, bad_out] = run("bad", 2, 3);
  EXPECT_TRUE(WIFEXITED(bad_status) && WEXITSTATUS(bad_status) == 1) << bad_out;
  EXPECT_NE(bad_out.find("logging.val_sequences = 8 must be a multiple of dp x "
                         "data.micro_batch_size = 2 x 3 = 6"),
            std::string::npos)
      << bad_out;
  EXPECT_NE(bad_out.find("nearest valid: 6 or 12"), std::string::npos) << bad_out;
}

// A JSON number field of a one-line object.
double json_number(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  return at == std::string::npos ? std::nan("") : std::stod(line.substr(at + key.size() + 4));
}

// `moetron eval` of a run's checkpoint gives the validation loss train reported at that step,
// in one process (the same digits) and under mpirun in other layouts (fp32 rounding); MTP
// losses and perplexity come with it.
TEST(EvalCommand, GivesTrainsValidationInAnyLayout) {
  TempDir dir;
  config::RunConfig cfg = testing::small_moe_run(dir / "run", 10);
  cfg.set_threads(1);
  cfg.mutable_logging()->set_val_interval(10);
  cfg.mutable_logging()->set_val_sequences(8);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  auto job = [&](const std::vector<std::string>& args, const std::string& name) {
    const Job j = start_mpirun(args, dir / (name + ".out"));
    const int status = wait_for(j, 120s);
    const std::string out = data::testing::read_text(j.output);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    return out;
  };
  job({"-np", "1", kMoetron, "train", config.string()}, "train");
  const std::vector<double> trained = val_losses(dir / "run" / "metrics.jsonl");
  ASSERT_EQ(trained.size(), 1u);
  const std::string run = (dir / "run").string();
  const std::string one = job({"-np", "1", kMoetron, "eval", run, "--json"}, "one");
  EXPECT_EQ(json_number(one, "val_loss"), trained[0]) << one;
  EXPECT_EQ(json_number(one, "windows"), 8) << one;
  EXPECT_NEAR(json_number(one, "perplexity"), std::exp(trained[0]), 1e-6 * std::exp(trained[0]));
  EXPECT_GT(json_number(one, "val_mtp_loss_1"), 0) << one;
  for (const auto& [ranks, sets] :
       {std::pair<std::string, std::vector<std::string>>{"2", {"data.micro_batch_size=2"}},
        {"2", {"data.micro_batch_size=4", "parallel.tp=2", "parallel.ep=2"}}}) {
    std::vector<std::string> args{"-np", ranks, kMoetron, "eval", run, "--json"};
    for (const std::string& s : sets) args.insert(args.end(), {"--set", s});
    const std::string out = job(args, "eval" + sets.back());
    EXPECT_NEAR(json_number(out, "val_loss"), trained[0], 1e-6 * trained[0]) << out;
  }
  // Windows the layout cannot split evenly are refused, naming the valid counts.
  std::string refused;
  const Job bad = start_mpirun(
      {"-np", "2", kMoetron, "eval", run, "--sequences", "6", "--set", "data.micro_batch_size=2"},
      dir / "bad.out");
  const int status = wait_for(bad, 120s);
  refused = data::testing::read_text(bad.output);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << refused;
  EXPECT_NE(refused.find("nearest valid: 4 or 8"), std::string::npos) << refused;
}

// With expert parallelism each step's record holds every expert-parallel rank's load per MoE
// layer: the rows its experts computed, which (dropless) are the counts of its block of experts.
TEST(ParallelTraining, MetricsHoldEachExpertParallelRanksLoad) {
  TempDir dir;
  config::RunConfig cfg = testing::small_moe_run(dir / "run", 3);
  cfg.set_threads(1);
  cfg.mutable_parallel()->set_ep(2);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  const Job job = start_mpirun({"-np", "2", kMoetron, "train", config.string()}, dir / "out.txt");
  const int status = wait_for(job, 120s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  int checked = 0;
  for (const std::string& line : testing::lines_of(dir / "run" / "metrics.jsonl")) {
    const data::JsonValue j = data::parse_json(line, "metrics.jsonl");
    if (j.find("kind") && j.at("kind").as_string() != "train") continue;
    for (const auto& [key, value] : j.members) {
      if (!key.ends_with(".ep_rows_received")) continue;
      const std::string layer = key.substr(0, key.size() - std::string("ep_rows_received").size());
      const std::vector<data::JsonValue>& ranks = value.as_array();
      const std::vector<data::JsonValue>& counts = j.at(layer + "counts").as_array();
      ASSERT_EQ(ranks.size(), 2u) << key;
      const size_t per_rank = counts.size() / 2;
      for (size_t r = 0; r < 2; ++r) {
        uint64_t expected = 0;
        for (size_t e = r * per_rank; e < (r + 1) * per_rank; ++e) expected += counts[e].as_u64();
        EXPECT_EQ(ranks[r].as_u64(), expected) << key << " rank " << r;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0) << out;
}

// Validation shares val_batches out over the data-parallel ranks; with fewer batches than ranks
// some have none in the last round, yet the expert all-to-all needs every rank of its group.
TEST(ParallelTraining, ExpertParallelValidationWithFewerBatchesThanRanksCompletes) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 4);
  cfg.set_threads(1);
  config::MoeConfig* moe = cfg.mutable_model()->mutable_moe();
  moe->set_n_routed_experts(2);
  moe->set_num_experts_per_tok(1);
  moe->set_moe_intermediate_size(16);
  cfg.mutable_parallel()->set_ep(2);  // dp 2: the expert group spans both data-parallel ranks
  cfg.mutable_logging()->set_val_interval(2);
  cfg.mutable_logging()->set_val_batches(1);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  const Job job = start_mpirun({"-np", "2", kMoetron, "train", config.string()}, dir / "out.txt");
  const int status = wait_for(job, 120s);
  const std::string out = data::testing::read_text(job.output);
  ASSERT_NE(status, -1) << "the job hung:\n" << out;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_EQ(count(data::testing::read_text(dir / "run" / "metrics.jsonl"), "\"kind\": \"val\""), 2u)
      << out;
}

}  // namespace
}  // namespace moetron
