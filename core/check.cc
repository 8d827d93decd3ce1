#include "core/check.h"

#include <filesystem>
#include <string_view>

namespace moetron {

std::string error_text(const std::exception& e) {
  const auto* fs = dynamic_cast<const std::filesystem::filesystem_error*>(&e);
  if (fs == nullptr) return e.what();
  // libstdc++: "filesystem error: " + operation + ": " + reason + " [path1] [path2]"
  std::string_view op = fs->what();
  if (op.starts_with("filesystem error: ")) op.remove_prefix(18);
  const std::string reason = fs->code().message();
  if (const size_t at = op.find(": " + reason); at != std::string_view::npos) op = op.substr(0, at);
  std::ostringstream os;
  os << op;
  if (!fs->path1().empty()) os << " " << fs->path1();
  if (!fs->path2().empty()) os << " and " << fs->path2();
  os << ": " << reason;
  return os.str();
}

}  // namespace moetron

namespace moetron::detail {

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  std::ostringstream os;
  os << "internal check failed at " << file << ":" << line << ": " << expr;
  if (!msg.empty()) os << " (" << msg << ")";
  throw Error(os.str());
}

}  // namespace moetron::detail
