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
  bool interrupted = false;         // stopped early by SIGINT/SIGTERM
};

// Runs cfg (already validated) and returns what it measured. Progress goes to `log` and to
// run_dir/train.log. `stop` is polled between steps (set by a signal handler).
TrainResult train(const config::RunConfig& cfg, std::ostream& log,
                  const std::atomic<bool>* stop = nullptr);

}  // namespace moetron
