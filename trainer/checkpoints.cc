#include "trainer/checkpoints.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <vector>

#include "core/check.h"
#include "data/file_io.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLatest = "latest";

checkpoint::OptimizerState state_of(AdamW& opt) {
  return {opt.owned(), opt.exp_avg(), opt.exp_avg_sq(), opt.steps()};
}

bool is_checkpoint_name(const std::string& name) {
  return name.starts_with("step-") && name.ends_with(".h5");
}

}  // namespace

Checkpoints::Checkpoints(const config::RunConfig& cfg, const ProcessGroups& groups)
    : dir_(cfg.checkpoint().dir().empty() ? fs::path(cfg.logging().run_dir()) / "checkpoints"
                                          : fs::path(cfg.checkpoint().dir())),
      keep_last_(cfg.checkpoint().keep_last()),
      groups_(groups) {}

fs::path Checkpoints::save(const Model& model, AdamW& optimizer,
                           const checkpoint::TrainState& state, const std::string& config_text) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld.h5", static_cast<long long>(state.step));
  fs::path file = dir_ / name;  // not const: returned by move
  if (groups_.rank() == 0) fs::create_directories(dir_);
  if (groups_.world()) groups_.world()->barrier();
  checkpoint::save(file, model.params(), state_of(optimizer), state, config_text, groups_);
  if (groups_.rank() == 0) {
    point_latest_at(file);
    prune(file);
  }
  return file;
}

void Checkpoints::point_latest_at(const fs::path& file) const {
  // Written beside, synced, renamed: `latest` always names a complete checkpoint.
  data::write_file_atomic(dir_ / kLatest, file.filename().string() + "\n");
  data::fsync_path(dir_);
}

void Checkpoints::prune(const fs::path& saved) const {
  std::vector<fs::path> older;  // than `saved`, which stays whatever else the directory holds
  size_t kept = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".h5.partial")) fs::remove(e.path());  // a save that was killed
    if (!is_checkpoint_name(name)) continue;
    // Zero-padded steps: name order is step order.
    if (name < saved.filename().string())
      older.push_back(e.path());
    else
      ++kept;
  }
  if (keep_last_ <= 0) return;
  std::sort(older.begin(), older.end());
  for (size_t i = 0; i < older.size() && older.size() - i + kept > static_cast<size_t>(keep_last_);
       ++i)
    fs::remove(older[i]);
}

std::optional<fs::path> Checkpoints::latest() const {
  std::ifstream in(dir_ / kLatest);
  std::string name;
  if (!in || !std::getline(in, name) || !is_checkpoint_name(name)) return std::nullopt;
  return dir_ / name;
}

checkpoint::TrainState Checkpoints::load(const fs::path& file, Model& model, AdamW& optimizer,
                                         const config::RunConfig& cfg) {
  checkpoint::OptimizerState opt = state_of(optimizer);
  const checkpoint::TrainState state = checkpoint::load(file, model.params(), &opt, cfg, groups_);
  optimizer.set_steps(opt.step);
  return state;
}

}  // namespace moetron
