#include "data/staged_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>

#include "core/check.h"
#include "data/file_io.h"

namespace moetron::data {
namespace {

namespace fs = std::filesystem;
using detail::concat;

std::string staging_prefix(const fs::path& output) {
  return clean_path(output).filename().string() + ".partial-";
}

}  // namespace

fs::path clean_path(const fs::path& p) {
  fs::path c = fs::weakly_canonical(fs::absolute(p)).lexically_normal();
  if (c.filename().empty() && c.has_parent_path()) c = c.parent_path();
  return c;
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  const fs::path rel = clean_path(inner).lexically_relative(clean_path(outer));
  return !rel.empty() && *rel.begin() != "..";
}

StagedDirectory::StagedDirectory(const fs::path& output, const char* what)
    : output_(clean_path(output)), what_(what) {
  const std::string prefix = staging_prefix(output_);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(output_.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(prefix)) continue;
    pid_t pid = 0;
    const char* end = name.data() + name.size();
    const auto [last, err] = std::from_chars(name.data() + prefix.size(), end, pid);
    if (err != std::errc() || last != end || pid <= 0) continue;
    if (::kill(pid, 0) == 0 || errno == EPERM) continue;  // its process still runs
    fs::remove_all(e.path(), ec);
  }
  staging_ = output_.parent_path() / (prefix + std::to_string(::getpid()));
  fs::remove_all(staging_);
  fs::create_directories(staging_);
}

StagedDirectory::~StagedDirectory() {
  std::error_code ec;
  if (!published_) fs::remove_all(staging_, ec);
}

void StagedDirectory::publish() {
  // Durable before it is visible: every file and directory of the new content, then the rename
  // itself (the parent directory).
  for (const auto& e : fs::recursive_directory_iterator(staging_))
    if (e.is_regular_file() || e.is_directory()) fsync_path(e.path());
  fsync_path(staging_);
  if (!fs::exists(output_)) {
    fs::rename(staging_, output_);
  } else if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, output_.c_str(), RENAME_EXCHANGE) ==
             0) {
    published_ = true;
    fsync_path(output_.parent_path());
    fs::remove_all(staging_);  // the old content
    return;
  } else if (errno != EINVAL && errno != ENOSYS) {
    throw Error(
        concat(what_, ": cannot move ", staging_, " to ", output_, ": ", std::strerror(errno)));
  } else {
    const fs::path old = output_.parent_path() /
                         (output_.filename().string() + ".old-" + std::to_string(::getpid()));
    fs::rename(output_, old);
    fs::rename(staging_, output_);
    fs::remove_all(old);
  }
  published_ = true;
  fsync_path(output_.parent_path());
}

}  // namespace moetron::data
