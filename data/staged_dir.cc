#include "data/staged_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/file_io.h"

namespace moetron::data {
namespace {

namespace fs = std::filesystem;
using detail::concat;

std::string staging_prefix(const fs::path& output) {
  return clean_path(output).filename().string() + ".partial-";
}

constexpr const char* kListingHeader = "moetron files 1";

// Every entry under `dir`, relative, directories with a trailing '/', sorted.
std::vector<std::string> content_of(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = it->path().lexically_relative(dir).generic_string();
    if (rel == kFilesListing) continue;
    if (it->is_directory() && !it->is_symlink()) rel += '/';
    out.push_back(std::move(rel));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void check_replaceable(const fs::path& output, const char* command, const char* flag,
                       bool overwrite) {
  const std::string what = concat(command, ": ", flag);
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(output, ec);
  if (!fs::exists(st)) return;
  if (!fs::is_directory(fs::status(output, ec)))
    throw Error(concat(what, " ", output, " exists and is not a directory"));
  if (fs::is_empty(output, ec)) return;
  if (!overwrite)
    throw Error(concat(what, " ", output, " exists and is not empty; pass --overwrite to replace ",
                       "what an earlier ", command, " wrote there, or choose another output"));
  const fs::path listing = output / kFilesListing;
  if (!fs::exists(fs::symlink_status(listing, ec)))
    throw Error(concat(what, " ", output, " was not written by moetron (it has no ", kFilesListing,
                       "); --overwrite replaces only what moetron wrote: choose another output ",
                       "or remove it yourself"));
  const std::string text = read_file(listing, kMaxTextFileBytes, "file listing");
  std::vector<std::string> listed;
  size_t at = 0;
  bool header = true;
  while (at < text.size()) {
    const size_t eol = std::min(text.find('\n', at), text.size());
    std::string line = text.substr(at, eol - at);
    at = eol + 1;
    if (header) {
      if (line != kListingHeader)
        throw Error(concat(what, " ", output, ": ", listing, " is not a moetron file listing"));
      header = false;
      continue;
    }
    if (!line.empty()) listed.push_back(std::move(line));
  }
  std::sort(listed.begin(), listed.end());
  std::vector<std::string> foreign;  // the outermost entries not listed
  for (const std::string& e : content_of(output)) {
    const bool inside_foreign =
        !foreign.empty() && foreign.back().ends_with('/') && e.starts_with(foreign.back());
    if (!inside_foreign && !std::binary_search(listed.begin(), listed.end(), e))
      foreign.push_back(e);
  }
  if (foreign.empty()) return;
  std::string names;
  for (size_t i = 0; i < foreign.size() && i < 3; ++i) names += (i ? ", " : "") + foreign[i];
  if (foreign.size() > 3) names += concat(" and ", foreign.size() - 3, " more");
  throw Error(concat(what, " ", output, " holds ", names,
                     ", which moetron did not write (not in its ", kFilesListing,
                     "); --overwrite replaces only what moetron wrote: move ",
                     foreign.size() > 1 ? "them" : "it", " out, or choose another output"));
}

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
  std::string listing = std::string(kListingHeader) + "\n";
  for (const std::string& e : content_of(staging_)) listing += e + "\n";
  write_file_atomic(staging_ / kFilesListing, listing);
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
