// The ownership of the directories a run writes: one run at a time holds each (an flock on
// DIR/.lock), and one that already holds a run's files is refused unless the caller asked to
// overwrite or resume. docs/runs.md states the policy.
#pragma once

#include <filesystem>

namespace moetron {

class RunDirectory {
 public:
  // What to do with a directory that already holds a run.
  enum class Existing { refuse, overwrite, resume };
  // Which directory: the run directory (logging.run_dir) holds the run's files and nothing of
  // another run; a checkpoint directory moved elsewhere (checkpoint.dir) may hold other files,
  // but no other run's checkpoints.
  enum class Kind { run, checkpoints };
  // Creates `dir` if missing and locks it. Throws Error naming the directory (and its config
  // field) when another process holds the lock, or when it holds a run's files and `existing`
  // is refuse. For a run directory, that is anything besides the lock file; overwrite removes
  // the files a run writes (config.pbtxt, train.log, metrics.jsonl, checkpoints/) and leaves
  // everything else alone. For a checkpoint directory, those are step-*.h5 (and .partial) and
  // `latest`, which overwrite removes. resume keeps everything.
  RunDirectory(const std::filesystem::path& dir, Existing existing, Kind kind = Kind::run);
  ~RunDirectory();  // releases the lock; the lock file stays
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path operator/(const char* name) const { return dir_ / name; }

 private:
  std::filesystem::path dir_;
  int lock_fd_ = -1;
};

}  // namespace moetron
