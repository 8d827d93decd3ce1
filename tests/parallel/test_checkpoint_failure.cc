// A checkpoint save that fails on one rank only (run under mpirun -np 2): rank 1 may not write
// past 64 KiB of any file (RLIMIT_FSIZE, as a full disk or quota would), so its blocks of a
// tensor-parallel layout fail while rank 0's succeed. Every rank must stop with rank 1's message
// (a CollectiveError), none may wait forever in HDF5's collective close, and no checkpoint may
// appear under the final name.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>

#include "checkpoint/checkpoint.h"
#include "configs/config.h"
#include "core/check.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/parallel/mpi_test.h"
#include "trainer/optimizer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using test::world;

class World2CheckpointFailure : public test::MpiTest {};

TEST_F(World2CheckpointFailure, AWriteFailingOnOneRankStopsEveryRankWithItsMessage) {
  MOETRON_REQUIRE_WORLD(2);
  const config::RunConfig cfg = parse_config_text(R"(
    model { vocab_size: 64 hidden_size: 64 num_hidden_layers: 2 num_attention_heads: 4
            num_key_value_heads: 2 intermediate_size: 128 }
    data { seq_len: 8 micro_batch_size: 1 }
  )",
                                                  "checkpoint_failure");
  Layout layout;
  layout.world = 2;
  layout.tp = 2;
  const ProcessGroups groups(layout);
  Model model(cfg.model(), 1, 8, groups.runtime());
  model.params().init(1, 0.02f);
  AdamW adam(model.params(), adamw_settings(cfg.optimizer()));
  const checkpoint::OptimizerState opt{adamw_slots(adam), 0};
  // One directory for both ranks: rank 0's temporary path, as every rank sees it on this node.
  const fs::path dir = fs::temp_directory_path() / "moetron_ckpt_failure";
  if (world().rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  world().barrier();
  const fs::path file = dir / "step-00000001.h5";

  rlimit saved{};
  getrlimit(RLIMIT_FSIZE, &saved);
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  if (world().rank() == 1) {
    sigaction(SIGXFSZ, &ignore, &previous);  // the write fails with EFBIG instead
    rlimit small = saved;
    small.rlim_cur = 64 << 10;
    setrlimit(RLIMIT_FSIZE, &small);
  }
  std::string message;
  try {
    checkpoint::save(file, model.params(), opt,
                     {.step = 1, .tokens_seen = 8, .samples_consumed = 1}, config_to_text(cfg),
                     groups);
  } catch (const CollectiveError& e) {
    message = e.what();
  }
  if (world().rank() == 1) {
    setrlimit(RLIMIT_FSIZE, &saved);
    sigaction(SIGXFSZ, &previous, nullptr);
  }
  EXPECT_NE(message.find("rank 1: checkpoint step 1 could not be written: "), std::string::npos)
      << "rank " << world().rank() << ": " << message;
  EXPECT_FALSE(fs::exists(file));
  world().barrier();
  if (world().rank() == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace moetron
