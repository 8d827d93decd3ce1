// `moetron validate CONFIG [--set a.b=value ...]`: check a run config without running it.
#include <cstdio>
#include <span>
#include <string>

#include "configs/config.h"
#include "core/check.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

constexpr const char* kUsage =
    "usage: moetron validate CONFIG [--set a.b=value ...]\n"
    "  Loads CONFIG (a text-format RunConfig, see docs/config.md), applies the --set\n"
    "  overrides in order, checks every rule, and prints the resolved config (every\n"
    "  default made explicit) to stdout.";

}  // namespace

int run_validate(std::span<const std::string> args) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  const ConfigArgs parsed = parse_command_args(args, kUsage);
  if (!parsed.rest.empty())
    throw Error(detail::concat("unexpected argument '", parsed.rest.front(), "'\n", kUsage));
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  const std::string text = config_to_text(cfg);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);  // the resolved config before the verdict when both go to a terminal
  std::fprintf(stderr, "ok: %s\n", parsed.path.c_str());
  return 0;
}

}  // namespace moetron
