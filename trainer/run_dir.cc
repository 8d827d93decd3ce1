#include "trainer/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using detail::concat;

constexpr const char* kLockFile = ".lock";
constexpr const char* kRunFiles[] = {"config.pbtxt", "train.log", "metrics.jsonl", "checkpoints"};

std::string read_small_file(int fd) {
  char buf[64] = {};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// What a run writes into a checkpoint directory (trainer/checkpoints.cc names them).
bool is_checkpoint_file(const std::string& name) {
  return (name.starts_with("step-") && (name.ends_with(".h5") || name.ends_with(".h5.partial"))) ||
         name == "latest" || name.starts_with("latest.tmp");
}

}  // namespace

RunDirectory::RunDirectory(const fs::path& dir, Existing existing, Kind kind) : dir_(dir) {
  const bool run = kind == Kind::run;
  const std::string field = run ? "logging.run_dir" : "checkpoint.dir";
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    throw Error(concat(field, " ", dir_, ": cannot create the directory (",
                       ec ? ec.message() : "not a directory", ")"));
  const fs::path lock = dir_ / kLockFile;
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw Error(concat(field, " ", dir_, ": cannot open ", lock, ": ", std::strerror(errno)));
  try {
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const std::string holder = read_small_file(lock_fd_);
      throw Error(concat(field, " ", dir_, " is in use by another moetron run (pid ",
                         holder.empty() ? "unknown" : holder, "); wait for it to end or choose ",
                         "another ", field));
    }
    std::vector<std::string> present;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (name != kLockFile && (run || is_checkpoint_file(name))) present.push_back(name);
    }
    if (!present.empty() && existing == Existing::refuse) {
      std::string listed;
      for (size_t i = 0; i < present.size() && i < 4; ++i) listed += (i ? ", " : "") + present[i];
      if (present.size() > 4) listed += ", ...";
      throw Error(concat(field, " ", dir_, run ? " is not empty (" : " holds checkpoints (", listed,
                         "): it holds an earlier run. Choose a new directory (--set ", field,
                         "=...), pass --resume to continue ",
                         "it from its latest checkpoint, or --overwrite to replace its files"));
    }
    if (existing == Existing::overwrite) {
      if (run)
        for (const char* name : kRunFiles) fs::remove_all(dir_ / name);
      else
        for (const std::string& name : present) fs::remove(dir_ / name);
    }
  } catch (...) {
    ::close(lock_fd_);  // the destructor does not run for a constructor that throws
    throw;
  }
  const std::string pid = std::to_string(::getpid());
  // The pid is only a hint for the error above; the flock is what excludes.
  if (::ftruncate(lock_fd_, 0) == 0) {
    [[maybe_unused]] const ssize_t written = ::pwrite(lock_fd_, pid.data(), pid.size(), 0);
  }
}

RunDirectory::~RunDirectory() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

}  // namespace moetron
