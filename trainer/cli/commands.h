// The subcommands of the `moetron` program. Each takes the arguments after its name and
// returns the process exit status; errors are reported as moetron::Error. A command that runs
// long polls `stop` and throws Stopped when it asks (train instead stops after the current step
// and saves a checkpoint; a SIGUSR1 sets `save_request`).
#pragma once

#include <atomic>
#include <charconv>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "configs/config.h"
#include "core/check.h"
#include "core/stop.h"

namespace moetron {

int run_validate(std::span<const std::string> args);                             // cmd_validate.cc
int run_prepare(std::span<const std::string> args, const StopToken& stop = {});  // cmd_prepare.cc
int run_train(std::span<const std::string> args, const StopToken& stop = {},
              std::atomic<int>* save_request = nullptr);                          // cmd_train.cc
int run_export(std::span<const std::string> args, const StopToken& stop = {});    // cmd_export.cc
int run_inspect(std::span<const std::string> args, const StopToken& stop = {});   // cmd_inspect.cc
int run_generate(std::span<const std::string> args, const StopToken& stop = {});  // cmd_generate.cc
int run_eval(std::span<const std::string> args, const StopToken& stop = {});      // cmd_eval.cc
int run_plan(std::span<const std::string> args);                                  // cmd_plan.cc

// Whether the arguments ask for the usage (-h or --help anywhere).
bool wants_help(std::span<const std::string> args);
// parse_config_args, with `usage` appended to its errors (a usage mistake shows the usage).
ConfigArgs parse_command_args(std::span<const std::string> args, const char* usage);
// A checkpoint named on the command line: a file, or a run directory or checkpoint directory
// (then the checkpoint its `latest` names). Throws Error when there is none.
std::string resolve_checkpoint(const std::string& path);

// The value of `flag` of `command` as a number; throws Error naming both, and what was wrong:
// not a number of this kind, or one beyond its range.
template <typename T>
T parse_number(std::string_view command, std::string_view flag, const std::string& text) {
  T value{};
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range)
    throw Error(detail::concat(command, ": ", flag, " ", text, " is out of range (at most ",
                               std::numeric_limits<T>::max(), ")"));
  if (ec != std::errc() || p != text.data() + text.size()) {
    const char* kind = std::is_floating_point_v<T> ? "a number"
                       : std::is_unsigned_v<T>     ? "a whole number >= 0"
                                                   : "a whole number";
    throw Error(detail::concat(command, ": ", flag, " expects ", kind, ", got \"", text, "\""));
  }
  return value;
}

}  // namespace moetron
