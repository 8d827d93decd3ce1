// The training loop: data -> forward/backward (with gradient accumulation) -> clip -> AdamW,
// validation on an interval, one progress line per log interval, metrics as JSONL.
#pragma once

#include <atomic>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <vector>

#include "configs/moetron.pb.h"

namespace moetron {

struct TrainResult {
  int64_t steps = 0;                // optimizer steps taken
  std::vector<double> losses;       // total training loss of each step
  std::vector<double> main_losses;  // main-head loss of each step
  double final_val_loss = 0.0;      // main-head validation loss at the end (NaN if none)
  int stop_signal = 0;              // the signal that stopped the run early, 0 if none
};

// Runs cfg (already validated) and returns what it measured. Progress goes to `log` and to
// run_dir/train.log. `stop` (a signal number, set by a signal handler) is polled between steps
// and between validation batches; the run then ends cleanly after the current step.
TrainResult train(const config::RunConfig& cfg, std::ostream& log,
                  const std::atomic<int>* stop = nullptr);

}  // namespace moetron
