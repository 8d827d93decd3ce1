// Checkpoints on one rank: a resumed run continues bitwise as if never stopped; loading names
// the first problem of a damaged or mismatched file and changes nothing on disk; old
// checkpoints are pruned and `latest` always names a complete one; SIGUSR1 saves and goes on.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/inspect.h"
#include "core/check.h"
#include "data/hash.h"
#include "models/model.h"
#include "tests/checkpoint/h5_edit.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/checkpoints.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using data::testing::TempDir;
using testing::lines_of;

// The MoE + MTP model of the fixture's small run, with gradient accumulation.
config::RunConfig moe_run(const fs::path& run_dir, int steps) {
  config::RunConfig cfg = testing::small_moe_run(run_dir, steps);
  config::MoeConfig* moe = cfg.mutable_model()->mutable_moe();
  moe->set_bias_update_speed(0.01f);
  moe->set_seq_aux_loss_alpha(0.01f);
  cfg.mutable_data()->set_grad_accum_steps(2);
  cfg.mutable_logging()->set_val_interval(3);
  return cfg;
}

std::vector<std::string> train_records(const fs::path& metrics) {
  std::vector<std::string> out;
  for (std::string line : lines_of(metrics)) {
    if (line.find("\"kind\": \"train\"") == std::string::npos) continue;
    line.erase(line.find("\"tokens_per_s\"") == std::string::npos ? line.size()
                                                                  : line.find("\"tokens_per_s\""));
    out.push_back(line);  // without the timings
  }
  return out;
}

std::vector<float> tensor(const fs::path& file, const std::string& path) {
  const checkpoint::H5File f(file.string(), checkpoint::H5File::Mode::read);
  const std::vector<uint64_t> shape = f.shape(path);
  const checkpoint::Rect all = shape.size() == 2 ? checkpoint::Rect{0, 0, shape[0], shape[1]}
                                                 : checkpoint::Rect{0, 0, 1, shape[0]};
  std::vector<float> v(all.rows * all.cols);
  f.read(path, {&all, 1}, v);
  return v;
}

void point_latest_at(const fs::path& dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld.h5", static_cast<long long>(step));
  std::ofstream(dir / "latest") << name << "\n";
}

TEST(Checkpoint, ResumeContinuesBitwiseAsIfNeverStopped) {
  TempDir a, b;
  std::ostringstream log;
  config::RunConfig cfg = moe_run(a.path(), 8);
  cfg.mutable_checkpoint()->set_interval(4);
  cfg.mutable_checkpoint()->set_keep_last(0);
  const TrainResult straight = train(cfg, log);
  // The same run, stopped after step 4: its directory as the interrupted run left it (metrics
  // and log beyond the checkpoint included, the newer checkpoint gone).
  fs::copy(a.path(), b.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  fs::remove(b / "checkpoints" / "step-00000008.h5");
  point_latest_at(b / "checkpoints", 4);
  config::RunConfig resumed = moe_run(b.path(), 8);
  resumed.mutable_checkpoint()->set_interval(4);
  TrainOptions options;
  options.resume = true;
  const TrainResult r = train(resumed, log, options);
  EXPECT_EQ(r.steps, 8);
  // What the resumed run computed, bitwise: the losses and gradient norms of steps 5-8.
  ASSERT_EQ(r.losses.size(), 4u);
  EXPECT_EQ(r.losses, std::vector<double>(straight.losses.begin() + 4, straight.losses.end()));
  EXPECT_EQ(r.grad_norms,
            std::vector<double>(straight.grad_norms.begin() + 4, straight.grad_norms.end()));
  // What it wrote: metrics.jsonl cut back to step 4 and continued (every record as the run that
  // never stopped wrote it), and the final checkpoint's every tensor and moment.
  EXPECT_EQ(train_records(a / "metrics.jsonl"), train_records(b / "metrics.jsonl"));
  const fs::path fa = a / "checkpoints" / "step-00000008.h5",
                 fb = b / "checkpoints" / "step-00000008.h5";
  const checkpoint::H5File ha(fa.string(), checkpoint::H5File::Mode::read);
  size_t compared = 0;
  for (const char* group : {"/params", "/exp_avg", "/exp_avg_sq"})
    for (const std::string& name : ha.list(group)) {
      const std::string path = std::string(group) + "/" + name;
      EXPECT_EQ(tensor(fa, path), tensor(fb, path)) << path;
      ++compared;
    }
  EXPECT_GT(compared, 100u);
  EXPECT_NE(data::testing::read_text(b / "train.log").find("resumed from "), std::string::npos);
}

TEST(Checkpoint, ResumeWithoutACheckpointSaysSo) {
  TempDir run;
  TrainOptions options;
  options.resume = true;
  std::ostringstream log;
  try {
    train(moe_run(run.path(), 2), log, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no checkpoint"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, KeepsTheNewestAndLatestNamesAComplete) {
  TempDir run;
  config::RunConfig cfg = moe_run(run.path(), 5);
  cfg.mutable_checkpoint()->set_interval(1);
  cfg.mutable_checkpoint()->set_keep_last(2);
  std::ostringstream log;
  train(cfg, log);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run / "checkpoints"))
    if (!e.path().filename().string().starts_with("."))
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000004.h5", "step-00000005.h5"}));
  EXPECT_EQ(data::testing::read_text(run / "checkpoints" / "latest"), "step-00000005.h5\n");
}

// checkpoint.dir outside the run directory belongs to its run: another run is refused there
// whatever it asks (--overwrite or --resume), and the owner's own --overwrite removes only
// checkpoint files.
TEST(Checkpoint, AnotherRunsCheckpointDirectoryIsNeverTouched) {
  TempDir a, b, shared;
  std::ostringstream log;
  config::RunConfig first = moe_run(a.path(), 2);
  first.mutable_checkpoint()->set_dir(shared.path().string());
  train(first, log);
  data::testing::write_text(shared / "notes.txt", "mine");
  const std::string latest = data::testing::read_text(shared / "latest");
  const std::string saved = data::testing::read_text(shared / "step-00000002.h5");
  config::RunConfig second = moe_run(b.path(), 3);
  second.mutable_checkpoint()->set_dir(shared.path().string());
  second.mutable_checkpoint()->set_keep_last(1);
  for (const char* how : {"refuse", "overwrite", "resume"}) {
    SCOPED_TRACE(how);
    TrainOptions options;
    options.overwrite = std::string(how) == "overwrite";
    options.resume = std::string(how) == "resume";
    try {
      train(second, log, options);
      ADD_FAILURE() << "expected the checkpoint directory to be refused";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("checkpoint.dir \"" + shared.path().string() + "\""), std::string::npos)
          << msg;
      EXPECT_NE(
          msg.find("holds the checkpoints of another run (run directory " + a.path().string()),
          std::string::npos)
          << msg;
    }
    EXPECT_EQ(data::testing::read_text(shared / "latest"), latest);
    EXPECT_EQ(data::testing::read_text(shared / "step-00000002.h5"), saved);
    EXPECT_FALSE(fs::exists(b / "config.pbtxt"));
  }
  // The owner replaces its own run: its checkpoints go, the user's file stays.
  first.mutable_schedule()->set_total_steps(3);
  TrainOptions overwrite;
  overwrite.overwrite = true;
  train(first, log, overwrite);
  EXPECT_FALSE(fs::exists(shared / "step-00000002.h5"));
  EXPECT_TRUE(fs::exists(shared / "step-00000003.h5"));
  EXPECT_EQ(data::testing::read_text(shared / "notes.txt"), "mine");
}

// Pruning never removes the checkpoint just saved, even beside a newer one it did not write.
TEST(Checkpoint, PruningKeepsTheCheckpointJustSaved) {
  TempDir run;
  config::RunConfig cfg = moe_run(run.path(), 2);
  cfg.mutable_checkpoint()->set_keep_last(1);
  std::ostringstream log;
  train(cfg, log);
  fs::copy_file(run / "checkpoints" / "step-00000002.h5",
                run / "checkpoints" / "step-00009999.h5");  // a stranger, newer by name
  config::RunConfig longer = moe_run(run.path(), 4);
  longer.mutable_checkpoint()->set_keep_last(1);
  TrainOptions resume;
  resume.resume = true;
  train(longer, log, resume);
  EXPECT_EQ(data::testing::read_text(run / "checkpoints" / "latest"), "step-00000004.h5\n");
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step-00000004.h5"));
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step-00000002.h5"));
}

// A checkpoint made once for the validation tests, and damaged copies of it.
class Damaged : public test::TrainedCheckpoint<Damaged> {
 public:
  static config::RunConfig run_config(const fs::path& run_dir, int steps) {
    return moe_run(run_dir, steps);
  }

 protected:
  // The error of loading `file` into the model of `cfg`, and the file unchanged by it.
  static std::string load_error(const fs::path& file, const config::RunConfig& cfg) {
    const std::string before = fs::exists(file) ? data::testing::read_text(file) : "";
    Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len());
    const ProcessGroups alone;
    std::string msg = "(no error)";
    try {
      checkpoint::load(file, model.params(), nullptr, cfg, alone);
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_EQ(fs::exists(file) ? data::testing::read_text(file) : "", before)
        << "loading changed " << file;
    return msg;
  }
  static std::string load_error(const fs::path& file) {
    return load_error(file, run_config(*dir_ / "run", kSteps));
  }
};

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

TEST_F(Damaged, TheGoodOneLoads) {
  EXPECT_EQ(load_error(*good_), "(no error)");
}

TEST_F(Damaged, MissingNotHdf5AndTruncatedFiles) {
  EXPECT_HAS(load_error(*dir_ / "nope.h5"), "does not exist");
  data::testing::write_text(*dir_ / "text.h5", "not a checkpoint\n");
  EXPECT_HAS(load_error(*dir_ / "text.h5"), "is not an HDF5 file, or it is truncated");
  const fs::path cut = *dir_ / "truncated.h5";
  fs::copy_file(*good_, cut, fs::copy_options::overwrite_existing);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  const std::string msg = load_error(cut);
  EXPECT_HAS(msg, cut.string());
  EXPECT_TRUE(msg.find("truncated") != std::string::npos) << msg;
}

// moetron inspect: the step, the layout, every tensor with its shape and norm, the bias spread.
TEST_F(Damaged, InspectPrintsTheStateTheTensorsAndTheBiasSpread) {
  std::ostringstream out;
  checkpoint::inspect(*good_, out, /*moments=*/true);
  const std::string text = out.str();
  EXPECT_HAS(text, "moetron-checkpoint version 3");
  EXPECT_HAS(text, "every tensor and moment matches its checksum");
  EXPECT_HAS(text, "step 2, ");
  EXPECT_HAS(text, "saved by the layout dp=1 tp=1 ep=1 zero1=0 world=1");
  EXPECT_HAS(text, "model.embed_tokens.weight");
  EXPECT_HAS(text, "exp_avg_sq");
  EXPECT_HAS(text, "router biases");
  EXPECT_HAS(text, "model.layers.1.mlp.gate: min ");
  std::ostringstream none;
  EXPECT_THROW(checkpoint::inspect(*dir_ / "absent.h5", none), Error);
}

TEST_F(Damaged, AnotherFormatVersion) {
  const fs::path f = copy_with("version.h5", [](hid_t file) {
    const hid_t attr = H5Aopen(file, "version", H5P_DEFAULT);
    const int64_t v = 99;
    H5Awrite(attr, H5T_NATIVE_INT64, &v);
    H5Aclose(attr);
  });
  EXPECT_HAS(load_error(f), "format version 99 is unknown (this build reads versions 2 to 3)");
  // inspect, generate and export read the config through the same header check.
  try {
    checkpoint::saved_config(f);
    ADD_FAILURE() << "saved_config took a file of another version";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "format version 99 is unknown");
  }
}

TEST_F(Damaged, AnotherModelNamesTheField) {
  config::RunConfig other = moe_run(*dir_ / "run", 2);
  other.mutable_model()->set_hidden_size(64);
  EXPECT_HAS(load_error(*good_, other), "model.hidden_size: the checkpoint has 32, the config 64");
  other = moe_run(*dir_ / "run", 2);
  other.mutable_model()->mutable_moe()->set_n_routed_experts(8);
  EXPECT_HAS(load_error(*good_, other),
             "model.moe.n_routed_experts: the checkpoint has 4, the config 8");
}

TEST_F(Damaged, MissingExtraReshapedAndRetypedTensors) {
  const std::string victim = "/params/model.layers.1.self_attn.q_proj.weight";
  EXPECT_HAS(load_error(copy_with("missing.h5",
                                  [&](hid_t f) { H5Ldelete(f, victim.c_str(), H5P_DEFAULT); })),
             "tensor model.layers.1.self_attn.q_proj.weight is missing");
  auto add = [](hid_t f, const char* name, hid_t type, std::vector<hsize_t> dims) {
    const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    H5Dclose(H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(space);
  };
  EXPECT_HAS(load_error(copy_with(
                 "extra.h5",
                 [&](hid_t f) {
                   add(f, "/params/model.layers.9.mlp.gate.weight", H5T_IEEE_F32LE, {4, 32});
                 })),
             "tensor model.layers.9.mlp.gate.weight is not part of this model");
  EXPECT_HAS(load_error(copy_with("shape.h5",
                                  [&](hid_t f) {
                                    H5Ldelete(f, victim.c_str(), H5P_DEFAULT);
                                    add(f, victim.c_str(), H5T_IEEE_F32LE, {16, 32});
                                  })),
             victim + " has shape [16, 32], the model its config describes needs [32, 32]");
  EXPECT_HAS(load_error(copy_with("dtype.h5",
                                  [&](hid_t f) {
                                    H5Ldelete(f, victim.c_str(), H5P_DEFAULT);
                                    add(f, victim.c_str(), H5T_IEEE_F64LE, {32, 32});
                                  })),
             victim + " is not f32");
}

TEST_F(Damaged, AChangedValueFailsItsChecksum) {
  const std::string victim = "/params/model.layers.0.mlp.down_proj.weight";
  const fs::path f = copy_with("flipped.h5", [&](hid_t file) {
    const hid_t ds = H5Dopen2(file, victim.c_str(), H5P_DEFAULT);
    const hid_t space = H5Dget_space(ds);
    const hsize_t start[2] = {3, 5}, count[2] = {1, 1}, one = 1;
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
    const hid_t mem = H5Screate_simple(1, &one, nullptr);
    const float v = 0.125f;
    H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &v);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(ds);
  });
  EXPECT_HAS(load_error(f), victim + " does not match its checksum");
}

// SIGUSR1 to a real run: a checkpoint now, and the run goes on to its end.
TEST(Checkpoint, SigusrOneSavesAndTheRunGoesOn) {
  TempDir dir;
  config::RunConfig cfg = testing::small_run(dir / "run", 400);
  cfg.set_threads(1);
  cfg.mutable_logging()->set_val_interval(0);
  std::ofstream(dir / "run.pbtxt") << config_to_text(cfg);
  const std::string binary = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen((dir / "out.txt").c_str(), "w", stdout);
    execl(binary.c_str(), binary.c_str(), "train", (dir / "run.pbtxt").c_str(), nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines_of(dir / "run" / "metrics.jsonl").size() < 5 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(kill(pid, SIGUSR1), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string log = data::testing::read_text(dir / "run" / "train.log");
  EXPECT_HAS(log, "(asked by SIGUSR1)");
  EXPECT_HAS(log, "checkpoint step 400 (end of run)");
}

}  // namespace
}  // namespace moetron
