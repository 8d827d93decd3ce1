// `moetron plan CONFIG [--world N] [--device NAME] [--imbalance F] [--set ...] [--json]`: what a
// run would need before it starts (trainer/plan.h, docs/plan.md).
#include <cstdio>
#include <optional>

#include "configs/config.h"
#include "core/check.h"
#include "trainer/cli/commands.h"
#include "trainer/plan.h"

namespace moetron {
namespace {

using detail::concat;

constexpr const char* kUsage =
    "usage: moetron plan CONFIG [--world N] [--device cpu|h100|h200|h800|b200]\n"
    "                    [--imbalance F] [--set a.b=value ...] [--json]\n"
    "  What one rank of the run would hold in memory (parameters, gradients, optimizer state,\n"
    "  the layers' activation buffers, the MoE dispatch buffers, the runtime) against the\n"
    "  device's memory, the FLOPs per token, the bytes each process group moves per step, and\n"
    "  an estimated step time and MFU from the device's peak and links (docs/plan.md).\n"
    "  Exits with 1 and the numbers when the layout does not fit.\n"
    "  --world N       ranks of the run (default 1); CONFIG's parallel.* lays them out\n"
    "  --device NAME   cpu: this machine (its memory, a GEMM probe); or a data-sheet GPU\n"
    "                  (default cpu)\n"
    "  --imbalance F   the busiest expert-parallel rank's routed rows over the mean, for\n"
    "                  dropless routing (default 1.25; a capacity factor bounds it instead)\n"
    "  --set a.b=value change the config (as train does)\n"
    "  --json          print the plan as one JSON object";

}  // namespace

int run_plan(std::span<const std::string> args) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  const ConfigArgs parsed = parse_command_args(args, kUsage);
  int world = 1;
  std::string device = "cpu";
  PlanOptions options;
  bool json = false;
  for (size_t i = 0; i < parsed.rest.size(); ++i) {
    const std::string& a = parsed.rest[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 == parsed.rest.size()) throw Error(concat("plan: ", a, " needs a value\n", kUsage));
      return parsed.rest[++i];
    };
    if (a == "--world") {
      world = parse_number<int>("plan", a, value());
      if (world < 1) throw Error(concat("plan: --world must be at least 1, got ", world));
    } else if (a == "--device") {
      device = value();
    } else if (a == "--imbalance") {
      options.imbalance = parse_number<double>("plan", a, value());
      if (!(options.imbalance >= 1.0))
        throw Error(
            concat("plan: --imbalance is the busiest rank's rows over the mean, at least "
                   "1, got ",
                   options.imbalance));
    } else if (a == "--json") {
      json = true;
    } else {
      throw Error(concat("plan: unexpected argument '", a, "'\n", kUsage));
    }
  }
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  const RunPlan plan = plan_run(cfg, world, device_spec(device, world), options);
  const std::string text = json ? to_json(plan) + "\n" : describe(plan);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  if (!plan.fits()) throw Error(concat(parsed.path, ": ", does_not_fit(plan)));
  return 0;
}

}  // namespace moetron
