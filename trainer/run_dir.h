// The run directory's ownership: one run at a time holds it (an flock on RUN_DIR/.lock), and a
// directory that already holds something is refused unless the caller asked to overwrite.
// docs/runs.md states the policy.
#pragma once

#include <filesystem>

namespace moetron {

class RunDirectory {
 public:
  // What to do with a directory that already holds a run.
  enum class Existing { refuse, overwrite, resume };
  // Creates `dir` if missing and locks it. Throws Error naming the directory when another
  // process holds the lock, or when it holds anything besides the lock file and `existing` is
  // refuse. overwrite removes the files a run writes (config.pbtxt, train.log, metrics.jsonl,
  // checkpoints/) and leaves everything else alone; resume keeps them.
  RunDirectory(const std::filesystem::path& dir, Existing existing);
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
