// The training loop: data -> the training step (micro-batches, gradient sync, clip, AdamW) ->
// validation on an interval, one progress line per log interval, metrics as JSONL. On several
// ranks every rank runs it; rank 0 alone writes the run directory and the console.
#pragma once

#include <atomic>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "configs/moetron.pb.h"
#include "core/stop.h"

namespace moetron {

class ProcessGroups;

struct TrainResult {
  int64_t steps = 0;                // optimizer steps taken
  std::vector<double> losses;       // total training loss of each step
  std::vector<double> main_losses;  // main-head loss of each step
  std::vector<double> grad_norms;   // global gradient norm of each step, before clipping
  double final_val_loss = 0.0;      // main-head validation loss at the end (NaN if none)
  int stop_signal = 0;              // the signal that stopped the run early, 0 if none
};

struct TrainOptions {
  // Replace the files of an earlier run in logging.run_dir instead of refusing (docs/runs.md).
  bool overwrite = false;
  // Continue the run in logging.run_dir from its latest checkpoint (docs/checkpoint.md), or,
  // when resume_from is set, from that checkpoint (a file, or a step number).
  bool resume = false;
  std::string resume_from;
  // Resume even when the dataset is not the one the checkpoint was trained on.
  bool allow_data_change = false;
  // Set from outside (SIGUSR1): save a checkpoint after the current step and go on; the trainer
  // clears it.
  std::atomic<int>* save_request = nullptr;
  // Set from outside (trainer/cli/stop_signals.h), polled between steps and between validation
  // batches; the run then ends cleanly after the current step.
  StopToken stop;
  // This rank's process groups (parallel/process_groups.h); null: one process alone.
  const ProcessGroups* groups = nullptr;
};

// Runs cfg (already validated) and returns what it measured. Progress goes to `log` and to
// run_dir/train.log. Steps are counted from 1 in everything a user sees: "step k" is the k-th
// optimizer step, and a record for step k describes the model after k updates.
TrainResult train(const config::RunConfig& cfg, std::ostream& log,
                  const TrainOptions& options = {});

}  // namespace moetron
