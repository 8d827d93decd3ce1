// The ownership of the directories a run writes (docs/runs.md, "Who owns a directory"): the run
// directory and the checkpoint directory, wherever checkpoint.dir puts it. While a run lives it
// holds an flock on DIR/.lock of each; each carries an owner file, DIR/.moetron-owner, naming the
// run (a random id given when the run starts, kept by --resume), so a directory that belongs to
// another run, live or not, is never pruned, overwritten or adopted, and only what moetron wrote
// is ever removed.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moetron {

// A held directory: locked until destroyed (the lock file stays behind, the flock goes with the
// process however it ends).
class DirectoryLock {
 public:
  // Creates `dir` if missing and locks it; throws Error naming `field` when another process
  // holds it.
  DirectoryLock(const std::filesystem::path& dir, const std::string& field);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// What to do with a directory that already holds a run.
enum class Existing { refuse, overwrite, resume };

// The run's directories, claimed together: every check is made before anything is changed, so a
// refused start (another run's directory, files in the way) changes nothing, and --overwrite
// moves the old run's files aside before removing them, so it either replaces them all or none.
class RunDirectories {
 public:
  // `run_dir`: logging.run_dir; `checkpoint_dir`: where the checkpoints go (RUN_DIR/checkpoints
  // by default, or checkpoint.dir; may be `run_dir` itself). Throws Error naming the directory,
  // its config field and the way out.
  RunDirectories(const std::filesystem::path& run_dir, const std::filesystem::path& checkpoint_dir,
                 Existing existing);
  ~RunDirectories();
  RunDirectories(const RunDirectories&) = delete;
  RunDirectories& operator=(const RunDirectories&) = delete;

  const std::filesystem::path& run_dir() const { return run_dir_; }
  const std::filesystem::path& checkpoint_dir() const { return checkpoint_dir_; }
  // The run's id, as the owner files record it.
  const std::string& run_id() const { return run_id_; }

 private:
  std::filesystem::path run_dir_, checkpoint_dir_;
  std::string run_id_;
  std::vector<std::unique_ptr<DirectoryLock>> locks_;
};

// The owner file's name.
inline constexpr const char* kOwnerFile = ".moetron-owner";

}  // namespace moetron
