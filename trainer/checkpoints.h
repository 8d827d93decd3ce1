// A run's checkpoint directory: step-NNNNNNNN.h5 files, the `latest` pointer, keeping the
// newest keep_last (docs/checkpoint.md).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "checkpoint/checkpoint.h"
#include "configs/moetron.pb.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "trainer/optimizer.h"

namespace moetron {

class Checkpoints {
 public:
  // cfg.checkpoint().dir(), or RUN_DIR/checkpoints when empty.
  Checkpoints(const config::RunConfig& cfg, const ProcessGroups& groups);

  const std::filesystem::path& dir() const { return dir_; }
  // Saves step `state.step` (every rank together), then points `latest` at it and removes the
  // checkpoints beyond keep_last and any .partial left by a killed save. Returns the file.
  std::filesystem::path save(const Model& model, AdamW& optimizer,
                             const checkpoint::TrainState& state, const std::string& config_text);
  // The checkpoint `latest` points to, or nullopt when there is none.
  std::optional<std::filesystem::path> latest() const;
  // Loads `file` into the model and optimizer (any layout wrote it).
  checkpoint::TrainState load(const std::filesystem::path& file, Model& model, AdamW& optimizer,
                              const config::RunConfig& cfg);

 private:
  void point_latest_at(const std::filesystem::path& file) const;
  // Removes the oldest checkpoints beyond keep_last; never `saved` nor a newer one.
  void prune(const std::filesystem::path& saved) const;

  std::filesystem::path dir_;
  int keep_last_;
  const ProcessGroups& groups_;
};

}  // namespace moetron
