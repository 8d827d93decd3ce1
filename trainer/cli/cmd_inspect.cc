// `moetron inspect CKPT [--moments]`
#include <cstdio>
#include <iostream>

#include "checkpoint/inspect.h"
#include "core/check.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

constexpr const char* kUsage =
    "usage: moetron inspect CKPT [--moments]\n"
    "  Prints what a checkpoint holds: the step and tokens, the layout that saved it, the model,\n"
    "  every tensor with its shape and L2 norm (--moments: AdamW's moments too) and the spread\n"
    "  of each MoE layer's router biases. CKPT is a checkpoint file, or a run or checkpoint\n"
    "  directory (its latest checkpoint). Every tensor and moment is verified against its\n"
    "  checksum as it is read; a mismatch is marked and makes the command fail (status 1).";

}  // namespace

int run_inspect(std::span<const std::string> args, const StopToken& stop) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  std::string path;
  bool moments = false;
  for (const std::string& a : args) {
    if (a == "--moments")
      moments = true;
    else if (path.empty() && !a.starts_with('-'))
      path = a;
    else
      throw Error(detail::concat("inspect: unexpected argument '", a, "'\n", kUsage));
  }
  if (path.empty()) throw Error(detail::concat("inspect: which checkpoint?\n", kUsage));
  checkpoint::inspect(resolve_checkpoint(path), std::cout, moments, stop);
  return 0;
}

}  // namespace moetron
