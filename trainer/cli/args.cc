// Argument helpers shared by the subcommands.
#include <filesystem>
#include <optional>

#include "core/check.h"
#include "trainer/checkpoints.h"
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

std::string resolve_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) return path;  // a file (load reports it if missing)
  for (const fs::path& dir : {fs::path(path), fs::path(path) / "checkpoints"})
    if (const std::optional<fs::path> latest = read_latest(dir)) return latest->string();
  throw Error(detail::concat(path, " is a directory without a checkpoint (no latest file in it ",
                             "or in its checkpoints/)"));
}

}  // namespace moetron
