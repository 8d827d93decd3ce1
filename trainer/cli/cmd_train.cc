// `moetron train CONFIG [--set a.b=value ...] [--overwrite]`
#include <cstdio>
#include <iostream>

#include "core/check.h"
#include "parallel/mpi_runtime.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/stop_signals.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

constexpr const char* kUsage =
    "usage: moetron train CONFIG [--set a.b=value ...] [--overwrite]\n"
    "  Trains the model of CONFIG (a text-format RunConfig, see docs/config.md) after applying\n"
    "  the --set overrides in order. Progress, metrics and the resolved config go to\n"
    "  logging.run_dir, which must be new or empty (docs/runs.md).\n"
    "  --overwrite   replace the files of an earlier run in logging.run_dir\n"
    "  SIGINT/SIGTERM stop the run after the current step with status 130/143.";

}  // namespace

int run_train(std::span<const std::string> args) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  ConfigArgs parsed = parse_command_args(args, kUsage);
  TrainOptions options;
  for (const std::string& a : parsed.rest) {
    if (a != "--overwrite")
      throw Error(detail::concat("train: unexpected argument '", a, "'\n", kUsage));
    options.overwrite = true;
  }
  const MpiRuntime mpi;
  try {
    if (mpi.world_size() > 1)
      throw CollectiveError(detail::concat(
          "started as ", mpi.world_size(),
          " ranks, but parallel training is not implemented "
          "yet: every rank would train the same model into the same run directory. Start one "
          "process (without mpirun/srun)"));
    const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
    const StopSignals signals;
    options.stop = &signals.requested();
    const TrainResult result = train(cfg, std::cout, options);
    return result.stop_signal != 0 ? 128 + result.stop_signal : 0;
  } catch (const CollectiveError& e) {
    if (mpi.world_size() == 1) throw;
    if (mpi.rank() == 0) std::fprintf(stderr, "moetron train: error: %s\n", e.what());
    return 1;  // every rank saw it: each exits cleanly
  } catch (const std::exception& e) {
    if (mpi.world_size() == 1) throw;
    std::fprintf(stderr, "moetron train: rank %d: error: %s\n", mpi.rank(), e.what());
    std::fflush(stderr);
    mpi.abort(1);  // the other ranks may wait in a collective: end them all
  }
}

}  // namespace moetron
