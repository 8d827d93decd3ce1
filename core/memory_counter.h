// A backend's count of the bytes its tensors hold (MemoryUse), safe from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/backend.h"

namespace moetron {

class MemoryCounter {
 public:
  void allocated(size_t bytes) {
    const int64_t live = live_.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
    int64_t peak = peak_.load();
    while (live > peak && !peak_.compare_exchange_weak(peak, live)) {
    }
  }
  void released(size_t bytes) { live_.fetch_sub(static_cast<int64_t>(bytes)); }
  MemoryUse use() const { return {live_.load(), peak_.load()}; }
  void reset_peak() { peak_.store(live_.load()); }

 private:
  std::atomic<int64_t> live_{0}, peak_{0};
};

}  // namespace moetron
