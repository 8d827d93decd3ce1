// The subcommands of the `moetron` program. Each takes the arguments after its name and
// returns the process exit status; errors are reported as moetron::Error.
#pragma once

#include <charconv>
#include <span>
#include <string>
#include <string_view>

#include "core/check.h"
#include "trainer/config.h"

namespace moetron {

int run_validate(std::span<const std::string> args);  // cmd_validate.cc
int run_prepare(std::span<const std::string> args);   // cmd_prepare.cc
int run_train(std::span<const std::string> args);     // cmd_train.cc
int run_export(std::span<const std::string> args);    // cmd_export.cc
int run_inspect(std::span<const std::string> args);   // cmd_inspect.cc
int run_generate(std::span<const std::string> args);  // cmd_generate.cc

// Whether the arguments ask for the usage (-h or --help anywhere).
bool wants_help(std::span<const std::string> args);
// parse_config_args, with `usage` appended to its errors (a usage mistake shows the usage).
ConfigArgs parse_command_args(std::span<const std::string> args, const char* usage);
// A checkpoint named on the command line: a file, or a run directory or checkpoint directory
// (then the checkpoint its `latest` names). Throws Error when there is none.
std::string resolve_checkpoint(const std::string& path);

// The value of `flag` of `command` as a number; throws Error naming both otherwise.
template <typename T>
T parse_number(std::string_view command, std::string_view flag, const std::string& text) {
  T value{};
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || p != text.data() + text.size())
    throw Error(detail::concat(command, ": ", flag, " expects a number, got \"", text, "\""));
  return value;
}

}  // namespace moetron
