// moetron: one program, one subcommand per task.
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/h5.h"
#include "core/stop.h"
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
    "  generate CKPT --prompt TEXT [options]  continue a prompt on the CPU (see --help)\n"
    "  eval CKPT [options]                    validation loss of a checkpoint (see --help)\n"
    "  plan CONFIG [--world N] [--device D]   memory, traffic and step time before a run\n";

}  // namespace

int main(int argc, char** argv) {
  // Before anything can start a thread: see stop_signals.h.
  moetron::block_stop_signals();
  moetron::checkpoint::disable_hdf5_exit_handler();
  // A write past `ulimit -f` fails with EFBIG and is reported like any failed write, instead of
  // killing the process without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    using Mode = moetron::StopSignals::Mode;
    moetron::StopSignals signals(command == "train" ? Mode::after_step : Mode::prompt);
    const moetron::StopToken stop(&signals.requested());
    try {
      if (command == "train") return moetron::run_train(args, stop, &signals.save_requested());
      if (command == "validate") return moetron::run_validate(args);
      if (command == "prepare") return moetron::run_prepare(args, stop);
      if (command == "export") return moetron::run_export(args, stop);
      if (command == "inspect") return moetron::run_inspect(args, stop);
      if (command == "generate") return moetron::run_generate(args, stop);
      if (command == "eval") return moetron::run_eval(args, stop);
      if (command == "plan") return moetron::run_plan(args);
    } catch (const moetron::Stopped& s) {
      // What was half made is gone: the destructors on the way here removed it.
      std::fflush(stdout);
      const bool replaces = command == "prepare" || command == "export";
      std::fprintf(stderr, "moetron %s: stopped by signal %d%s\n", command.c_str(), s.signal,
                   replaces ? "; the output directory is as it was before" : "");
      return 128 + s.signal;
    }
    if (command == "-h" || command == "--help" || command == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "moetron: unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    const std::string text = moetron::error_text(e);
    std::string_view msg = text;
    if (msg.starts_with(command + ": ")) msg.remove_prefix(command.size() + 2);  // said once
    std::fprintf(stderr, "moetron %s: error: %.*s\n", command.c_str(), static_cast<int>(msg.size()),
                 msg.data());
    return 1;
  }
}
