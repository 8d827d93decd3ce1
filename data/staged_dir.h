// Replacing a directory all at once: it is built beside its final place (OUT.partial-PID, on the
// same file system) and swapped in only when complete (renameat2 RENAME_EXCHANGE), so at every
// moment OUT is the old content or the new, complete. Used by `prepare` and `export`.
//
// The rule for replacing (docs/runs.md, "Replacing a directory"): OUT may be replaced only with
// the command's --overwrite, and only when everything in it is what moetron wrote there: each
// published directory lists its own content in OUT/.moetron-files, and a file or directory not
// listed (a README, a .git) makes the command refuse, naming it. Nothing else is ever deleted.
#pragma once

#include <filesystem>

namespace moetron::data {

// `p` absolute, symlinks resolved where they exist, without a trailing separator.
std::filesystem::path clean_path(const std::filesystem::path& p);
// Whether `inner` is `outer` or lies inside it.
bool is_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

// The listing of what moetron wrote, inside every directory it publishes.
inline constexpr const char* kFilesListing = ".moetron-files";

// Whether `output` may be replaced: absent, an empty directory, or (with `overwrite`) a
// directory holding only what its .moetron-files lists. Throws Error naming the command and its
// flag ("prepare", "--output"), the directory, the first entries that are in the way, and the
// way out.
void check_replaceable(const std::filesystem::path& output, const char* command, const char* flag,
                       bool overwrite);

class StagedDirectory {
 public:
  // Removes the staging directories of dead processes left beside `output` and makes a fresh
  // one for this process. `what` names the command in errors ("prepare").
  StagedDirectory(const std::filesystem::path& output, const char* what);
  ~StagedDirectory();  // removes the staging directory unless it was published
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  const std::filesystem::path& path() const { return staging_; }
  // Lists the staged content in .moetron-files and moves the finished directory to the output,
  // swapping out what was there in one step (the old content ends up at the staging path and
  // is removed). Everything in it is fsynced first,
  // and the parent directory after, so the new content survives a power loss whole. Without
  // RENAME_EXCHANGE (some file systems) it takes two renames, and a kill between them leaves
  // the old content complete at OUT.old-PID.
  void publish();

 private:
  std::filesystem::path output_, staging_;
  const char* what_;
  bool published_ = false;
};

}  // namespace moetron::data
