// `moetron train CONFIG [--set a.b=value ...] [--overwrite]`, one process or every rank of an
// MPI job.
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>

#include "configs/config.h"
#include "core/check.h"
#include "parallel/collective.h"
#include "parallel/every_rank.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "trainer/cli/commands.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

constexpr const char* kUsage =
    "usage: moetron train CONFIG [--set a.b=value ...] [--overwrite | --resume | --resume-from "
    "CKPT]\n"
    "  Trains the model of CONFIG (a text-format RunConfig, see docs/config.md) after applying\n"
    "  the --set overrides in order. Progress, metrics and the resolved config go to\n"
    "  logging.run_dir, which must be new or empty (docs/runs.md).\n"
    "  --overwrite          replace the files of an earlier run in logging.run_dir (only what\n"
    "                       that run wrote)\n"
    "  --resume             continue the run in logging.run_dir from its latest checkpoint, in\n"
    "                       this layout or any other (docs/checkpoint.md)\n"
    "  --resume-from CKPT   continue it from CKPT instead: a step number (its checkpoint in the\n"
    "                       run's checkpoint directory) or a checkpoint file\n"
    "  --allow-data-change  resume even though data.dataset_dir holds other data than the\n"
    "                       checkpoint was trained on\n"
    "  Under mpirun/srun every rank runs it; parallel { dp tp ep } sets the layout\n"
    "  (docs/parallelism.md). SIGINT/SIGTERM save a checkpoint and stop the run after the\n"
    "  current step with status 130/143; SIGUSR1 saves one and goes on.";

// Every rank must run the same config: compared as resolved text against rank 0's.
void check_same_config(Communicator& world, const config::RunConfig& cfg) {
  const std::string mine = config_to_text(cfg);
  Tensor length = Tensor::empty({1}, DType::i64);
  length.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
  world.broadcast(length, 0);
  Tensor text = Tensor::zeros({std::max<int64_t>(length.data<int64_t>()[0], 1)}, DType::u8);
  if (world.rank() == 0) std::copy(mine.begin(), mine.end(), text.data<uint8_t>());
  world.broadcast(text, 0);
  const std::string root(reinterpret_cast<const char*>(text.data<uint8_t>()),
                         static_cast<size_t>(length.data<int64_t>()[0]));
  if (root == mine) return;
  std::istringstream a(root), b(mine);
  std::string la, lb;
  int line = 0;
  while (++line, std::getline(a, la) && std::getline(b, lb) && la == lb) {
  }
  throw Error(detail::concat(
      "was started with a different config than rank 0 (the resolved configs differ at line ", line,
      ": rank 0 has \"", la, "\", this rank \"", lb,
      "\"); start every rank with the same CONFIG and --set arguments"));
}

}  // namespace

int run_train(std::span<const std::string> args, const StopToken& stop,
              std::atomic<int>* save_request) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  ConfigArgs parsed = parse_command_args(args, kUsage);
  TrainOptions options;
  for (size_t i = 0; i < parsed.rest.size(); ++i) {
    const std::string& a = parsed.rest[i];
    if (a == "--overwrite") {
      options.overwrite = true;
    } else if (a == "--resume") {
      options.resume = true;
    } else if (a == "--allow-data-change") {
      options.allow_data_change = true;
    } else if (a == "--resume-from") {
      if (i + 1 == parsed.rest.size() || parsed.rest[i + 1].empty())
        throw Error(
            detail::concat("train: --resume-from needs a checkpoint (a step or a file)\n", kUsage));
      options.resume = true;
      options.resume_from = parsed.rest[++i];
    } else {
      throw Error(detail::concat("train: unexpected argument '", a, "'\n", kUsage));
    }
  }
  if (options.overwrite && options.resume)
    throw Error(detail::concat("train: --overwrite and --resume exclude each other\n", kUsage));
  const MpiRuntime mpi;
  return run_on_every_rank(mpi, "train", [&] {
    config::RunConfig cfg;
    std::optional<MpiCommunicator> world;
    if (mpi.active()) world.emplace(MPI_COMM_WORLD, "world");
    Layout layout;
    // Before anything is allocated, on every rank: the same config, a layout that fits.
    // Loading can fail on some ranks only (a node without the file), so it is agreed on before
    // the comparison's broadcasts.
    run_collectively(world ? &*world : nullptr,
                     [&] { cfg = load_config(parsed.path, parsed.overrides); });
    run_collectively(world ? &*world : nullptr, [&] {
      if (world) check_same_config(*world, cfg);
      layout = resolve_layout(cfg, mpi.world_size());
    });
    // The resolved layout is what config.pbtxt records.
    config::ParallelConfig* p = cfg.mutable_parallel();
    p->set_dp(layout.dp);
    p->set_tp(layout.tp);
    p->set_ep(layout.ep);
    // A run on a device gets the device's collectives for its device tensors (NCCL on CUDA).
    const std::optional<ProcessGroups> groups =
        mpi.active() ? std::optional<ProcessGroups>(std::in_place, layout, MPI_COMM_WORLD,
                                                    parse_device(cfg.device()))
                     : std::nullopt;
    options.stop = stop;
    options.save_request = save_request;
    options.groups = groups ? &*groups : nullptr;
    const TrainResult result = train(cfg, std::cout, options);
    return result.stop_signal != 0 ? 128 + result.stop_signal : 0;
  });
}

}  // namespace moetron
