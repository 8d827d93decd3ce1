// SIGINT and SIGTERM as a polled stop request, SIGUSR1 as a polled checkpoint request, never as
// an interruption of library code.
//
// block_stop_signals() runs first in main(), so every thread the process starts from then on
// (OpenMP, oneDNN, MPI) inherits the blocked mask and no stop signal lands inside their code.
// StopSignals receives them synchronously on its own thread with sigtimedwait. Threads that
// libraries started before main() (OpenBLAS's pool, created when the library loads) cannot be
// masked from here: for them a handler (SA_RESTART, async-signal-safe) does the same thing.
// The first signal is stored for the command to poll; a second one ends the process at once with
// status 128 + signal (everything written so far is already flushed).
//
// Two ways to stop (docs/runs.md): training finishes the current step and saves a checkpoint
// (after_step); every other command stops at its next poll, between two tensors, tokens or
// documents (prompt), and if it is still running kGraceSeconds later (inside a library call
// that cannot be interrupted, such as SentencePiece's training) the process exits by itself.
#pragma once

#include <atomic>
#include <thread>

namespace moetron {

void block_stop_signals();

class StopSignals {
 public:
  enum class Mode { after_step, prompt };
  static constexpr int kGraceSeconds = 3;

  explicit StopSignals(Mode mode);  // needs block_stop_signals() to have run in the main thread
  ~StopSignals();                   // stops the receiving thread
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // 0 until a stop signal arrives, then its number.
  const std::atomic<int>& requested() const;
  // Set by each SIGUSR1; the trainer clears it when it has saved.
  std::atomic<int>& save_requested() const;

 private:
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

}  // namespace moetron
