// A request to stop, polled by long-running work between units of it (a training step, a tensor
// written, a token generated, a document read). Signals set it (trainer/cli/stop_signals.h);
// tests set it directly. Work that cannot stop at once where it stands throws Stopped, and the
// destructors on the way out remove what was half made.
#pragma once

#include <atomic>
#include <string>

#include "core/check.h"

namespace moetron {

// Thrown by StopToken::check: the work was stopped by signal `signal` (or a test's request).
class Stopped : public Error {
 public:
  explicit Stopped(int sig) : Error(detail::concat("stopped by signal ", sig)), signal(sig) {}
  int signal;
};

class StopToken {
 public:
  StopToken() = default;  // never asks to stop
  explicit StopToken(const std::atomic<int>* request) : request_(request) {}
  // 0, or the number of the signal that asked to stop.
  int requested() const { return request_ != nullptr ? request_->load() : 0; }
  void check() const {
    if (const int sig = requested(); sig != 0) throw Stopped(sig);
  }

 private:
  const std::atomic<int>* request_ = nullptr;
};

}  // namespace moetron
