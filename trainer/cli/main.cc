// moetron: one program, one subcommand per task.
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "trainer/cli/commands.h"
#include "trainer/cli/stop_signals.h"

namespace {

constexpr const char* kUsage =
    "usage: moetron <command> [args]\n"
    "  train CONFIG [--set a.b=value ...]     train a model (--overwrite: reuse a run dir)\n"
    "  validate CONFIG [--set a.b=value ...]  check a config and print it resolved\n"
    "  prepare [options]                      turn text files into token shards (see --help)\n"
    "  inspect CKPT                           what a checkpoint holds\n"
    "  export CKPT --out DIR [options]        a checkpoint as a Hugging Face model (see --help)\n"
    "  generate CKPT --prompt TEXT [options]  continue a prompt on the CPU (see --help)\n";

}  // namespace

int main(int argc, char** argv) {
  // Before anything can start a thread: see stop_signals.h.
  moetron::block_stop_signals();
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (command == "train") return moetron::run_train(args);
    if (command == "validate") return moetron::run_validate(args);
    if (command == "prepare") return moetron::run_prepare(args);
    if (command == "export") return moetron::run_export(args);
    if (command == "inspect") return moetron::run_inspect(args);
    if (command == "generate") return moetron::run_generate(args);
    if (command == "-h" || command == "--help" || command == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "moetron: unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::string_view msg = e.what();
    if (msg.starts_with(command + ": ")) msg.remove_prefix(command.size() + 2);  // said once
    std::fprintf(stderr, "moetron %s: error: %.*s\n", command.c_str(), static_cast<int>(msg.size()),
                 msg.data());
    return 1;
  }
}
