// Argument helpers shared by the subcommands.
#include "core/check.h"
#include "trainer/cli/commands.h"

namespace moetron {

bool wants_help(std::span<const std::string> args) {
  for (const std::string& a : args)
    if (a == "-h" || a == "--help") return true;
  return false;
}

ConfigArgs parse_command_args(std::span<const std::string> args, const char* usage) {
  try {
    return parse_config_args(args);
  } catch (const Error& e) {
    throw Error(detail::concat(e.what(), "\n", usage));
  }
}

}  // namespace moetron
