// The names of what a run writes into its checkpoint directory, stated once: step-NNNNNNNN.h5
// (zero-padded, so name order is step order), its .partial while being written, and `latest`
// (written beside as latest.tmp.PID, then renamed).
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace moetron {

inline constexpr const char* kLatestFile = "latest";

inline std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld.h5", static_cast<long long>(step));
  return name;
}

// The step of a checkpoint file name ("step-00000150.h5" -> 150), or nullopt for any other name.
inline std::optional<int64_t> checkpoint_step(const std::string& name) {
  if (!name.starts_with("step-") || !name.ends_with(".h5") || name.size() < 9) return std::nullopt;
  int64_t step = -1;
  const char* first = name.data() + 5;
  const char* last = name.data() + name.size() - 3;
  const auto [end, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || end != last || step < 0) return std::nullopt;
  return step;
}

// Whether `name` is one moetron writes into a checkpoint directory.
inline bool is_checkpoint_file(const std::string& name) {
  return checkpoint_step(name).has_value() ||
         (name.starts_with("step-") && name.ends_with(".h5.partial")) || name == kLatestFile ||
         name.starts_with("latest.tmp");
}

}  // namespace moetron
