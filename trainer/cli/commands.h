// The subcommands of the `moetron` program. Each takes the arguments after its name and
// returns the process exit status; errors are reported as moetron::Error.
#pragma once

#include <span>
#include <string>

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

}  // namespace moetron
