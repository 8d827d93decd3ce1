#include "core/check.h"

namespace moetron::detail {

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  std::ostringstream os;
  os << "internal check failed at " << file << ":" << line << ": " << expr;
  if (!msg.empty()) os << " (" << msg << ")";
  throw Error(os.str());
}

}  // namespace moetron::detail
