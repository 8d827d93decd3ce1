// A run's checkpoint directory: step-NNNNNNNN.h5 files, the `latest` pointer, keeping the
// newest keep_last (docs/checkpoint.md). The directory is the run's own (trainer/run_dir.h
// checked that before anything here runs).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "configs/moetron.pb.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "trainer/optimizer.h"

namespace moetron {

// The checkpoint `latest` in `dir` names, or nullopt when `dir` has no `latest`. Throws Error
// when `latest` cannot be read, is not a small regular file, or names no checkpoint file that
// exists, saying which checkpoints `dir` holds.
std::optional<std::filesystem::path> read_latest(const std::filesystem::path& dir);
// The checkpoint files (step-*.h5) in `dir`, oldest first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);

class Checkpoints {
 public:
  // cfg.checkpoint().dir(), or RUN_DIR/checkpoints when empty.
  Checkpoints(const config::RunConfig& cfg, const ProcessGroups& groups);

  const std::filesystem::path& dir() const { return dir_; }
  // Saves step `state.step` (every rank together), then points `latest` at it and removes the
  // checkpoints beyond keep_last and any .partial left by a killed save. Returns the file. On
  // failure throws, naming the cause and the checkpoint `latest` still names.
  std::filesystem::path save(const Model& model, Optimizer& optimizer,
                             const checkpoint::TrainState& state, const std::string& config_text);
  // The checkpoint to resume from: the one `latest` names when `spec` is empty, else `spec`: a
  // checkpoint file, or a step number (its step-NNNNNNNN.h5 here). Throws Error naming what is
  // wrong and a way out that loses nothing.
  std::filesystem::path resume_point(const std::string& spec) const;
  // Loads `file` into the model and optimizer (any layout wrote it).
  checkpoint::TrainState load(const std::filesystem::path& file, Model& model, Optimizer& optimizer,
                              const config::RunConfig& cfg);
  // "; DIR holds 3 checkpoints, the newest step-00000150.h5: --resume-from 150 continues from
  // it ...", or "" when it holds none besides `except`: what to say after a resume point is
  // found wanting.
  std::string alternatives(const std::filesystem::path& except = {}) const;

 private:
  void point_latest_at(const std::filesystem::path& file) const;
  // Removes the oldest checkpoints beyond keep_last; never `saved` nor a newer one.
  void prune(const std::filesystem::path& saved) const;

  std::filesystem::path dir_;
  int keep_last_;
  const ProcessGroups& groups_;
};

}  // namespace moetron
