#include "trainer/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>

#include "core/check.h"
#include "data/file_io.h"
#include "trainer/checkpoint_names.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using detail::concat;

constexpr const char* kLockFile = ".lock";
constexpr const char* kRunFiles[] = {"config.pbtxt", "train.log", "metrics.jsonl", "tensorboard"};
constexpr const char* kRunField = "logging.run_dir";
constexpr const char* kCheckpointField = "checkpoint.dir";

std::string read_small_file(int fd) {
  char buf[64] = {};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// What a directory's owner file says.
struct Owner {
  enum class Kind { none, run, checkpoints } kind = Kind::none;
  std::string id;
  std::string run_dir;  // for a checkpoint directory: its run's directory, as it was then
};

// "moetron run ID" or "moetron checkpoints of run ID (run directory PATH)".
Owner read_owner(const fs::path& dir) {
  const fs::path file = dir / kOwnerFile;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(file, ec))) return {};
  const std::string text = data::read_file(file, data::kMaxSmallFileBytes, "owner file");
  std::istringstream in(text.substr(0, text.find('\n')));
  std::string moetron, kind, of, run, id;
  in >> moetron >> kind;
  Owner o;
  if (moetron == "moetron" && kind == "run" && (in >> id) && !id.empty()) {
    o.kind = Owner::Kind::run;
  } else if (moetron == "moetron" && kind == "checkpoints" && (in >> of >> run >> id) &&
             of == "of" && run == "run") {
    o.kind = Owner::Kind::checkpoints;
    const size_t at = text.find("(run directory ");
    if (at != std::string::npos) o.run_dir = text.substr(at + 15, text.find(')', at) - at - 15);
  } else {
    throw Error(concat(file, " is not a moetron owner file (it says \"", in.str(),
                       "\"); if the directory is yours, remove the file"));
  }
  o.id = id;
  return o;
}

void write_owner(const fs::path& dir, const std::string& text) {
  data::write_file_atomic(dir / kOwnerFile, text + "\n");
}

std::string new_run_id() {
  std::random_device device;
  std::mt19937_64 gen((uint64_t{device()} << 32) ^ device() ^ static_cast<uint64_t>(::getpid()));
  char id[17];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(gen()));
  return id;
}

bool same_directory(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

bool is_bookkeeping(const std::string& name) {
  return name == kLockFile || name == kOwnerFile;
}

// Whether `p` is a directory that holds nothing but lock and owner files (a checkpoint
// directory a start created before it was refused, say).
bool is_vacant_directory(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(p, ec))) return false;
  for (const auto& e : fs::directory_iterator(p, ec))
    if (!is_bookkeeping(e.path().filename().string())) return false;
  return !ec;
}

// The entries of `dir` a run may leave behind, without the lock and owner files (and
// directories holding nothing else).
std::vector<std::string> entries(const fs::path& dir, bool checkpoint_files_only) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (is_bookkeeping(name) || is_vacant_directory(e.path())) continue;
    if (!checkpoint_files_only || is_checkpoint_file(name)) out.push_back(name);
  }
  if (ec) throw Error(concat("cannot list ", dir, ": ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

std::string listed(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 4; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 4) s += ", ...";
  return s;
}

// Removes `files` (paths) all or none: each is first renamed into a trash directory beside it
// (the same file system), and only when every rename worked is the trash removed. A failure
// moves back what was moved and names the file and the cause.
void remove_all_or_none(const std::vector<fs::path>& files) {
  std::vector<std::pair<fs::path, fs::path>> moved;  // (from, to)
  auto undo = [&] {
    std::error_code ec;
    for (auto it = moved.rbegin(); it != moved.rend(); ++it) fs::rename(it->second, it->first, ec);
  };
  const std::string trash_name = concat(".moetron-trash-", ::getpid());
  std::vector<fs::path> trashes;
  for (const fs::path& f : files) {
    const fs::path trash = f.parent_path() / trash_name;
    std::error_code ec;
    if (std::find(trashes.begin(), trashes.end(), trash) == trashes.end()) {
      fs::create_directory(trash, ec);
      if (!ec) trashes.push_back(trash);
    }
    if (!ec) fs::rename(f, trash / f.filename(), ec);
    if (ec) {
      undo();
      for (const fs::path& t : trashes) fs::remove(t, ec);
      throw Error(concat("--overwrite: cannot remove ", f, " (", ec.message(),
                         "); nothing of the earlier run was removed"));
    }
    moved.emplace_back(f, trash / f.filename());
  }
  for (const fs::path& t : trashes) {
    std::error_code ec;
    fs::remove_all(t, ec);
  }
}

}  // namespace

DirectoryLock::DirectoryLock(const fs::path& dir, const std::string& field) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error(concat(field, " ", dir, ": cannot create the directory (",
                       ec ? ec.message() : "not a directory", ")"));
  const fs::path lock = dir / kLockFile;
  fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0)
    throw Error(concat(field, " ", dir, ": cannot open ", lock, ": ", std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_small_file(fd_);
    ::close(fd_);  // the destructor does not run for a constructor that throws
    throw Error(concat(field, " ", dir, " is in use by another moetron run (pid ",
                       holder.empty() ? "unknown" : holder, "); wait for it to end or choose ",
                       "another ", field));
  }
  // The pid is only a hint for the error above; the flock is what excludes.
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] const ssize_t written = ::pwrite(fd_, pid.data(), pid.size(), 0);
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

namespace {

// The owner checks of one directory, made before it is locked (a refused run leaves nothing, not
// even its pid, in another run's directory) and again once locked (the owner cannot have
// changed under the lock).
void check_run_owner(const fs::path& dir, const Owner& o) {
  if (o.kind == Owner::Kind::checkpoints)
    throw Error(concat(kRunField, " ", dir, " is the checkpoint directory of another run (",
                       o.run_dir.empty() ? "see its " + std::string(kOwnerFile) : o.run_dir,
                       "); choose another ", kRunField));
}

void check_checkpoint_owner(const fs::path& dir, const std::string& field, const Owner& o,
                            const std::string& run_id) {
  if (o.kind == Owner::Kind::run)
    throw Error(concat(field, " ", dir,
                       " is the run directory of another run; a run never writes into another "
                       "run's directory: choose another ",
                       field));
  if (o.kind == Owner::Kind::checkpoints && (run_id.empty() || o.id != run_id))
    throw Error(concat(field, " ", dir, " holds the checkpoints of another run (run directory ",
                       o.run_dir.empty() ? "unknown" : o.run_dir, ", per its ", kOwnerFile,
                       "); a run never prunes, replaces or continues another run's checkpoints: "
                       "choose another ",
                       field));
}

}  // namespace

RunDirectories::RunDirectories(const fs::path& run_dir, const fs::path& checkpoint_dir,
                               Existing existing)
    : run_dir_(run_dir), checkpoint_dir_(checkpoint_dir) {
  // Checks first: nothing below changes a file until every one has passed.
  check_run_owner(run_dir_, read_owner(run_dir_));
  locks_.push_back(std::make_unique<DirectoryLock>(run_dir_, kRunField));
  const Owner run = read_owner(run_dir_);
  check_run_owner(run_dir_, run);
  const std::vector<std::string> present = entries(run_dir_, false);
  if (!present.empty() && existing == Existing::refuse)
    throw Error(concat(kRunField, " ", run_dir_, " is not empty (", listed(present),
                       "): it holds an earlier run. Choose a new directory (--set ", kRunField,
                       "=...), pass --resume to continue it from its latest checkpoint, or "
                       "--overwrite to replace its files"));
  // A run from before owner files: its directory holds its files but no owner file.
  const bool pre_owner_run = run.kind == Owner::Kind::none && !present.empty();

  const bool separate = !same_directory(run_dir_, checkpoint_dir_) &&
                        fs::weakly_canonical(run_dir_) != fs::weakly_canonical(checkpoint_dir_);
  const bool default_place =
      fs::weakly_canonical(checkpoint_dir_) == fs::weakly_canonical(run_dir_ / "checkpoints");
  // The run's checkpoint directories: the configured one, and for --overwrite also the default
  // one of the run being replaced.
  std::vector<fs::path> checkpoint_dirs;
  if (separate) checkpoint_dirs.push_back(checkpoint_dir_);
  if (!default_place && existing == Existing::overwrite &&
      fs::is_directory(run_dir_ / "checkpoints"))
    checkpoint_dirs.push_back(run_dir_ / "checkpoints");
  std::vector<fs::path> old_files;  // what --overwrite removes
  if (!separate)
    for (const std::string& name : entries(run_dir_, true)) old_files.push_back(run_dir_ / name);
  for (const fs::path& dir : checkpoint_dirs) {
    const bool configured = dir == checkpoint_dir_;
    const std::string field = configured ? kCheckpointField : kRunField;
    check_checkpoint_owner(dir, field, read_owner(dir), run.id);
    if (configured) locks_.push_back(std::make_unique<DirectoryLock>(dir, field));
    const Owner owner = read_owner(dir);
    check_checkpoint_owner(dir, field, owner, run.id);
    const std::vector<std::string> files = entries(dir, true);
    if (!files.empty() && existing == Existing::refuse)
      throw Error(concat(field, " ", dir, " holds checkpoints (", listed(files),
                         ") of an earlier run. Choose another ", field, ", pass --resume to ",
                         "continue from them, or --overwrite to replace them"));
    // Checkpoints no owner file claims belong to a run from before owner files, or were copied
    // there by hand: only that run itself continues them (--resume) or replaces its default
    // checkpoints/ (--overwrite); nothing else adopts or deletes them.
    const bool adoptable =
        pre_owner_run && (existing == Existing::resume || dir == run_dir_ / "checkpoints");
    if (owner.kind == Owner::Kind::none && !files.empty() && !adoptable)
      throw Error(concat(field, " ", dir, " holds checkpoints (", listed(files),
                         ") that no run claims (no ", kOwnerFile,
                         "); moetron neither adopts nor deletes them. To continue from one, pass "
                         "its file to --resume-from and choose another ",
                         field, " for this run"));
    for (const std::string& name : files) old_files.push_back(dir / name);
  }

  // Then the changes: the old run's files go (all or none), the owner files are written.
  // The run keeps its ID but when it is replaced.
  run_id_ = existing != Existing::overwrite && !run.id.empty() ? run.id : new_run_id();
  if (existing == Existing::overwrite) {
    for (const char* name : kRunFiles)
      if (fs::exists(fs::symlink_status(run_dir_ / name))) old_files.push_back(run_dir_ / name);
    remove_all_or_none(old_files);
  }
  write_owner(run_dir_, "moetron run " + run_id_);
  if (separate)
    write_owner(checkpoint_dir_, concat("moetron checkpoints of run ", run_id_, " (run directory ",
                                        fs::absolute(run_dir_).lexically_normal().string(), ")"));
}

RunDirectories::~RunDirectories() = default;

}  // namespace moetron
