// kill -9 during checkpoint saves, with real processes, alone and under mpirun: after every
// kill `latest` names a complete checkpoint that loads (every checksum verified) and the run
// resumes from it; a partial file is never taken for the latest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "models/model.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/checkpoints.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using data::testing::TempDir;

const std::string kMoetron = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";

std::string latest_name(const fs::path& dir) {
  std::ifstream in(dir / "latest");
  std::string name;
  std::getline(in, name);
  return name;
}

// Whether the checkpoint loads completely: every tensor and moment, every checksum.
std::string load_problem(const fs::path& file) {
  try {
    const config::RunConfig cfg = checkpoint::saved_config(file);
    Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len());
    AdamW adam(model.params(), cfg.optimizer());
    checkpoint::OptimizerState opt{adam.owned(), adam.exp_avg(), adam.exp_avg_sq(), 0};
    const ProcessGroups alone;
    checkpoint::load(file, model.params(), &opt, cfg, alone);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Trains, saving every step, and kills the job `kills` times at random moments once a first
// checkpoint exists; each restart resumes. `ranks` > 1 runs under mpirun and kills one rank.
void kill_during_saves(int ranks, int kills, uint64_t seed) {
  TempDir dir;
  // Saves of a 2 M-parameter model take most of each step's time.
  config::RunConfig cfg = testing::small_run(dir / "run", 1000000);
  cfg.mutable_model()->set_hidden_size(128);
  cfg.mutable_model()->set_intermediate_size(512);
  cfg.mutable_checkpoint()->set_interval(1);
  cfg.mutable_checkpoint()->set_keep_last(2);
  cfg.mutable_logging()->set_val_interval(0);
  cfg.set_threads(1);
  const fs::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  const fs::path checkpoints = dir / "run" / "checkpoints";
  std::mt19937_64 gen(seed);
  int during_save = 0;
  for (int i = 0; i < kills; ++i) {
    std::vector<std::string> argv;
    if (ranks > 1)
      argv = {"mpirun", "--oversubscribe", "--allow-run-as-root", "-np", std::to_string(ranks)};
    argv.insert(argv.end(), {kMoetron, "train", config.string()});
    if (i > 0) argv.push_back("--resume");
    const pid_t job = test::spawn(argv, dir / ("out" + std::to_string(i) + ".txt"));
    ASSERT_GT(job, 0);
    // Once this run has saved (the latest moved on), kill it within the next 300 ms.
    const std::string before = latest_name(checkpoints);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (latest_name(checkpoints) == before && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    std::this_thread::sleep_for(
        std::chrono::microseconds(std::uniform_int_distribution<int>(0, 300'000)(gen)));
    pid_t victim = job;
    if (ranks > 1) {  // a rank, not the launcher
      FILE* p =
          popen(("pgrep -P " + std::to_string(job) + " -f 'trainer/moetron train'").c_str(), "r");
      long pid = 0;
      if (p && fscanf(p, "%ld", &pid) == 1) victim = static_cast<pid_t>(pid);
      if (p) pclose(p);
    }
    kill(victim, SIGKILL);
    int status = 0;
    if (ranks > 1) {
      const auto until = std::chrono::steady_clock::now() + 60s;
      while (waitpid(job, &status, WNOHANG) != job && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(10ms);
      kill(-job, SIGKILL);  // whatever is left of the job
      waitpid(job, &status, WNOHANG);
    } else {
      waitpid(job, &status, 0);
    }
    for (const auto& e : fs::directory_iterator(checkpoints))
      if (e.path().string().ends_with(".partial")) {
        ++during_save;
        break;
      }
    const std::string name = latest_name(checkpoints);
    ASSERT_FALSE(name.empty()) << "kill " << i << ": no latest";
    EXPECT_FALSE(name.ends_with(".partial")) << name;
    const std::string problem = load_problem(checkpoints / name);
    ASSERT_EQ(problem, "") << "kill " << i << ": " << name << " does not load";
  }
  std::cout << kills << " kills (" << ranks << " rank" << (ranks > 1 ? "s" : "")
            << "): " << during_save << " in the middle of a save" << std::endl;
  EXPECT_GT(during_save, 0) << "no kill landed in a save: the test did not test what it should";
}

TEST(CheckpointKill, KillNineDuringSavesAlone) {
  kill_during_saves(1, 20, 11);
}

TEST(CheckpointKill, KillNineOfOneRankDuringSavesUnderMpirun) {
  kill_during_saves(2, 20, 12);
}

}  // namespace
}  // namespace moetron
