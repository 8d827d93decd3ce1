// Errors and internal assertions.
//
// moetron::Error is what crosses a boundary (a bad file, config, or argument): its message
// names the culprit and what would be valid. MOETRON_CHECK guards internal invariants; a
// failure there is a bug in moetron, reported with the source location.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moetron {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// An Error that every rank of a job raises alike at the same point (a bad config, a layout
// that does not fit, a diverged step): rank 0 alone reports it and every rank exits cleanly,
// where any other error is reported by its rank and aborts the whole job.
class CollectiveError : public Error {
 public:
  explicit CollectiveError(const std::string& what) : Error(what) {}
};

// What to tell the user about `e`: its message, and for a std::filesystem error its operation,
// its paths and the system's reason in that order ("cannot create directories "runs/x":
// Permission denied") rather than the library's own wording.
std::string error_text(const std::exception& e);

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* expr,
                               const std::string& msg);

// Builds a message from stream-able parts: concat("bad value ", v, " for ", name).
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace moetron

#define MOETRON_CHECK(cond, ...)                                                                 \
  do {                                                                                           \
    if (!(cond)) [[unlikely]]                                                                    \
      ::moetron::detail::check_failed(__FILE__, __LINE__, #cond,                                 \
                                      ::moetron::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
