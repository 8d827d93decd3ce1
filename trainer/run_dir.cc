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

}  // namespace

RunDirectory::RunDirectory(const fs::path& dir, Existing existing) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    throw Error(concat("logging.run_dir ", dir_, ": cannot create the run directory (",
                       ec ? ec.message() : "not a directory", ")"));
  const fs::path lock = dir_ / kLockFile;
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw Error(
        concat("logging.run_dir ", dir_, ": cannot open ", lock, ": ", std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_small_file(lock_fd_);
    ::close(lock_fd_);
    throw Error(concat("logging.run_dir ", dir_, " is in use by another moetron run (pid ",
                       holder.empty() ? "unknown" : holder,
                       "); wait for it to end or choose another logging.run_dir"));
  }
  std::vector<std::string> present;
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().filename() != kLockFile) present.push_back(e.path().filename().string());
  if (!present.empty() && existing == Existing::refuse) {
    std::string listed;
    for (size_t i = 0; i < present.size() && i < 4; ++i) listed += (i ? ", " : "") + present[i];
    if (present.size() > 4) listed += ", ...";
    ::close(lock_fd_);
    throw Error(concat("logging.run_dir ", dir_, " is not empty (", listed,
                       "): it holds an earlier run. Choose a new directory (--set "
                       "logging.run_dir=...), pass --resume to continue it from its latest "
                       "checkpoint, or --overwrite to replace its files"));
  }
  if (existing == Existing::overwrite)
    for (const char* name : kRunFiles) fs::remove_all(dir_ / name);
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
