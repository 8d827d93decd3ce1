// The subcommands of the `moetron` program. Each takes the arguments after its name and
// returns the process exit status; errors are reported as moetron::Error.
#pragma once

#include <span>
#include <string>

namespace moetron {

int run_validate(std::span<const std::string> args);  // trainer/cmd_validate.cc
int run_prepare(std::span<const std::string> args);   // data/cmd_prepare.cc
int run_train(std::span<const std::string> args);     // trainer/cmd_train.cc

}  // namespace moetron
