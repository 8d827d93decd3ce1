// kill -9 during checkpoint saves, with real processes, alone and under mpirun: after every
// kill `latest` names a complete checkpoint that loads (every checksum verified), the next run
// resumes from it, and the run, finished at last, has the losses and gradient norms of the run
// that was never killed; a partial file is never taken for the latest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "models/model.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/checkpoint_names.h"
#include "trainer/checkpoints.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using data::testing::TempDir;

const std::string kMoetron = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";

// A save in progress (or one a kill interrupted) left its partial file.
bool has_partial(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().string().ends_with(".partial")) return true;
  return false;
}

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
    AdamW adam(model.params(), adamw_settings(cfg.optimizer()));
    checkpoint::OptimizerState opt{adamw_slots(adam), 0};
    const ProcessGroups alone;
    checkpoint::load(file, model.params(), &opt, cfg, alone);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Every training record of metrics.jsonl as (step, loss, grad_norm), as written.
std::vector<std::string> losses_of(const fs::path& metrics) {
  std::vector<std::string> out;
  auto field = [](const std::string& line, const std::string& key) {
    const size_t at = line.find("\"" + key + "\": ");
    if (at == std::string::npos) return std::string("?");
    const size_t from = at + key.size() + 4;
    return line.substr(from, line.find_first_of(",}", from) - from);
  };
  for (const std::string& line : testing::lines_of(metrics))
    if (line.find("\"kind\": \"train\"") != std::string::npos)
      out.push_back(field(line, "step") + " " + field(line, "loss") + " " +
                    field(line, "grad_norm"));
  return out;
}

// Every dataset of a checkpoint (weights, AdamW's moments), by name.
std::map<std::string, std::vector<float>> tensors_of(const fs::path& file) {
  const checkpoint::H5File f(file.string(), checkpoint::H5File::Mode::read);
  std::map<std::string, std::vector<float>> out;
  for (const char* group : {"/params", "/exp_avg", "/exp_avg_sq"})
    for (const std::string& name : f.list(group)) {
      const std::string path = std::string(group) + "/" + name;
      const std::vector<uint64_t> shape = f.shape(path);
      const checkpoint::Rect all = shape.size() == 2 ? checkpoint::Rect{0, 0, shape[0], shape[1]}
                                                     : checkpoint::Rect{0, 0, 1, shape[0]};
      std::vector<float>& v = out[path];
      v.resize(all.rows * all.cols);
      f.read(path, {&all, 1}, v);
    }
  return out;
}

// The step `latest` names, or -1.
int64_t latest_step(const fs::path& dir) {
  const std::string name = latest_name(dir);
  return name.size() == 16 ? std::stoll(name.substr(5, 8)) : -1;
}

std::vector<std::string> job(int ranks, const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  if (ranks > 1)
    argv = {"mpirun", "--oversubscribe", "--allow-run-as-root", "-np", std::to_string(ranks)};
  argv.push_back(kMoetron);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Trains, saving every step, and kills the job `kills` times at random moments once a first
// checkpoint exists; each restart resumes, and must continue from the checkpoint `latest` named
// when it started. Then the run is finished (three more steps) and must have written exactly
// the losses and gradient norms, and saved exactly the weights, of the same run never killed.
// `ranks` > 1 runs under mpirun and kills one rank (found among the launcher's children, or the
// test fails).
void kill_during_saves(int ranks, int kills, uint64_t seed) {
  TempDir dir;
  // Saves of a 2 M-parameter model take most of each step's time. A constant learning rate, so
  // the last run may end the schedule anywhere and still train as the uninterrupted one did.
  config::RunConfig cfg = testing::small_run(dir / "run", 1000000);
  cfg.mutable_model()->set_hidden_size(128);
  cfg.mutable_model()->set_intermediate_size(512);
  cfg.mutable_schedule()->set_kind(config::ScheduleConfig::CONSTANT);
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
    std::vector<std::string> args{"train", config.string()};
    if (i > 0) args.push_back("--resume");
    const int64_t from = latest_step(checkpoints);
    const fs::path out = dir / ("out" + std::to_string(i) + ".txt");
    const pid_t pid = test::spawn(job(ranks, args), out);
    ASSERT_GT(pid, 0);
    // Once this run has saved (the latest moved on), kill it within the next 300 ms.
    const std::string before = latest_name(checkpoints);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (latest_name(checkpoints) == before && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    ASSERT_NE(latest_name(checkpoints), before) << "run " << i << " saved nothing in 60 s:\n"
                                                << data::testing::read_text(out);
    if (i > 0) {  // it resumed from the checkpoint latest named when it started
      const std::string log = data::testing::read_text(out);
      const std::string want = "resumed from " + (checkpoints / checkpoint_name(from)).string() +
                               ": step " + std::to_string(from) + ",";
      EXPECT_NE(log.find(want), std::string::npos) << "run " << i << ": no \"" << want << "\"\n"
                                                   << log;
    }
    pid_t victim = pid;
    if (ranks > 1) {  // a rank, not the launcher: found before the aim, which must be quick
      FILE* p =
          popen(("pgrep -P " + std::to_string(pid) + " -f 'trainer/moetron train'").c_str(), "r");
      long rank_pid = 0;
      const bool found = p && fscanf(p, "%ld", &rank_pid) == 1;
      if (p) pclose(p);
      ASSERT_TRUE(found) << "run " << i << ": no rank among mpirun's children to kill";
      victim = static_cast<pid_t>(rank_pid);
    }
    if (i % 2 == 1) {
      // Aimed: wait for the next save to start writing, then kill inside it.
      const auto until = std::chrono::steady_clock::now() + 30s;
      while (!has_partial(checkpoints) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(
          std::chrono::microseconds(std::uniform_int_distribution<int>(0, 5'000)(gen)));
    } else {  // at random
      std::this_thread::sleep_for(
          std::chrono::microseconds(std::uniform_int_distribution<int>(0, 300'000)(gen)));
    }
    // In a save when its partial file is there as the kill lands (a failing job's rank 0 may
    // remove it afterwards).
    if (has_partial(checkpoints)) ++during_save;
    kill(victim, SIGKILL);
    if (ranks > 1) {
      const test::Exit e = test::wait_for(pid, 60s);  // kills what is left of the job then
      (void)e;
    } else {
      int status = 0;
      waitpid(pid, &status, 0);
    }
    const std::string name = latest_name(checkpoints);
    ASSERT_FALSE(name.empty()) << "kill " << i << ": no latest";
    EXPECT_FALSE(name.ends_with(".partial")) << name;
    const std::string problem = load_problem(checkpoints / name);
    ASSERT_EQ(problem, "") << "kill " << i << ": " << name << " does not load";
  }
  std::cout << kills << " kills (" << ranks << " rank" << (ranks > 1 ? "s" : "")
            << "): " << during_save << " in the middle of a save" << std::endl;
  EXPECT_GE(during_save, kills / 2)
      << "fewer kills than the aimed ones landed in a save: the test did not test what it should";

  // The last run, to three steps past the last checkpoint, against the run never killed.
  const int64_t end = latest_step(checkpoints) + 3;
  const std::string steps = "schedule.total_steps=" + std::to_string(end);
  const test::Exit last =
      test::wait_for(test::spawn(job(ranks, {"train", config.string(), "--resume", "--set", steps}),
                                 dir / "last.txt"),
                     120s);
  ASSERT_TRUE(last.exited && last.status == 0) << data::testing::read_text(dir / "last.txt");
  const test::Exit straight =
      test::wait_for(test::spawn(job(ranks, {"train", config.string(), "--set", steps, "--set",
                                             "logging.run_dir=" + (dir / "straight").string()}),
                                 dir / "straight.txt"),
                     120s);
  ASSERT_TRUE(straight.exited && straight.status == 0)
      << data::testing::read_text(dir / "straight.txt");
  const std::vector<std::string> got = losses_of(dir / "run" / "metrics.jsonl");
  EXPECT_EQ(got.size(), static_cast<size_t>(end));
  EXPECT_EQ(got, losses_of(dir / "straight" / "metrics.jsonl"));
  EXPECT_TRUE(tensors_of(checkpoints / checkpoint_name(end)) ==
              tensors_of(dir / "straight" / "checkpoints" / checkpoint_name(end)))
      << "the final weights or AdamW moments differ from the run never killed";
}

// Every other kill is aimed into a save (a partial file exists), the rest land anywhere; each
// kill costs a start-up (mpirun's too), so a few of each kind (20 random ones alone were 35 s of
// CI's test time, and landed about 3 in a save).
TEST(CheckpointKill, KillNineDuringSavesAlone) {
  kill_during_saves(1, 10, 11);
}

TEST(CheckpointKill, KillNineOfOneRankDuringSavesUnderMpirun) {
  kill_during_saves(2, 6, 12);
}

}  // namespace
}  // namespace moetron
