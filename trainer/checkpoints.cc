#include "trainer/checkpoints.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include "core/check.h"
#include "data/file_io.h"
#include "trainer/checkpoint_names.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using detail::concat;

checkpoint::OptimizerState state_of(const Optimizer& opt) {
  return opt.state();
}

}  // namespace

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (checkpoint_step(e.path().filename().string())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<fs::path> read_latest(const fs::path& dir) {
  const fs::path latest = dir / kLatestFile;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(latest, ec))) return std::nullopt;
  std::string text = data::read_file(latest, data::kMaxSmallFileBytes, "the latest pointer");
  const std::string name = text.substr(0, text.find('\n'));
  if (!checkpoint_step(name))
    throw Error(concat(latest, " does not name a checkpoint (it holds \"", name.substr(0, 64),
                       "\", not step-NNNNNNNN.h5)"));
  if (!fs::exists(dir / name))
    throw Error(concat(latest, " names ", name, ", which does not exist"));
  return dir / name;
}

Checkpoints::Checkpoints(const config::RunConfig& cfg, const ProcessGroups& groups)
    : dir_(cfg.checkpoint().dir().empty() ? fs::path(cfg.logging().run_dir()) / "checkpoints"
                                          : fs::path(cfg.checkpoint().dir())),
      keep_last_(cfg.checkpoint().keep_last()),
      groups_(groups) {}

std::string Checkpoints::alternatives(const fs::path& except) const {
  std::vector<fs::path> all = list_checkpoints(dir_);
  std::erase_if(all, [&](const fs::path& p) {
    std::error_code ec;
    return !except.empty() && fs::equivalent(p, except, ec);
  });
  if (all.empty()) return "";
  const std::string newest = all.back().filename().string();
  return concat("; ", dir_, " holds ", all.size(), except.empty() ? "" : " other", " checkpoint",
                all.size() > 1 ? "s" : "", ", the newest ", newest, ": --resume-from ",
                *checkpoint_step(newest), " continues from it (or from any other step)");
}

fs::path Checkpoints::resume_point(const std::string& spec) const {
  if (spec.empty()) {
    std::optional<fs::path> latest;
    try {
      latest = read_latest(dir_);
    } catch (const Error& e) {
      throw Error(concat("--resume: ", e.what(), alternatives()));
    }
    if (latest) return *latest;
    const std::string others = alternatives();
    if (others.empty())
      throw Error(concat("--resume: ", dir_, " holds no checkpoint (no `latest`, no step-*.h5); ",
                         "there is nothing to resume"));
    throw Error(concat("--resume: ", dir_ / kLatestFile, " is missing", others));
  }
  int64_t step = -1;
  const auto [end, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), step);
  fs::path file = ec == std::errc() && end == spec.data() + spec.size() && step >= 0
                      ? dir_ / checkpoint_name(step)
                      : fs::path(spec);
  std::error_code fec;
  if (!fs::exists(file, fec))
    throw Error(concat("--resume-from ", spec, ": ", file, " does not exist", alternatives()));
  return file;
}

fs::path Checkpoints::save(const Model& model, Optimizer& optimizer,
                           const checkpoint::TrainState& state, const std::string& config_text) {
  fs::path file = dir_ / checkpoint_name(state.step);  // not const: returned by move
  if (groups_.rank() == 0) fs::create_directories(dir_);
  if (groups_.world()) groups_.world()->barrier();
  try {
    checkpoint::save(file, model.params(), state_of(optimizer), state, config_text, groups_);
  } catch (const Error& e) {
    std::optional<fs::path> kept;
    try {
      kept = read_latest(dir_);
    } catch (const Error&) {
    }
    throw CollectiveError(
        concat(e.what(), kept ? concat("; the latest checkpoint is still ", *kept)
                              : std::string("; no checkpoint of this run was kept")));
  }
  if (groups_.rank() == 0) {
    point_latest_at(file);
    prune(file);
  }
  return file;
}

void Checkpoints::point_latest_at(const fs::path& file) const {
  // Written beside, synced, renamed: `latest` always names a complete checkpoint.
  data::write_file_atomic(dir_ / kLatestFile, file.filename().string() + "\n");
  data::fsync_path(dir_);
}

void Checkpoints::prune(const fs::path& saved) const {
  std::vector<fs::path> older;  // than `saved`, which stays whatever else the directory holds
  size_t kept = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("step-") && name.ends_with(".h5.partial"))
      fs::remove(e.path());  // a save that was killed
    if (!checkpoint_step(name)) continue;
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

checkpoint::TrainState Checkpoints::load(const fs::path& file, Model& model, Optimizer& optimizer,
                                         const config::RunConfig& cfg) {
  checkpoint::OptimizerState opt = state_of(optimizer);
  checkpoint::TrainState state = checkpoint::load(file, model.params(), &opt, cfg, groups_);
  optimizer.set_steps(opt.step);
  return state;
}

}  // namespace moetron
