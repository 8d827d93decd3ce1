// Files moetron reads and writes: read-only memory maps, bounded whole-file reads, and atomic
// writes (temp file, fsync, rename) so a crash never leaves a half-written shard or manifest
// under its final name.
//
// Every file moetron reads is untrusted (docs/runs.md): it must be a regular file (a FIFO or a
// device would block or never end; each is refused before anything reads it), and a whole-file
// read has a size limit. Errors name the file and the real cause (errno's text).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace moetron::data {

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept;
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now so the caller sees the error (close can report a failed write-back).
  int close();

 private:
  int fd_;
};

// Opens `file` for reading, refusing anything but a regular file without blocking on it (a FIFO
// is opened non-blocking, then refused). `what` names the file's role in errors ("checkpoint").
// Throws Error: "<what> FILE does not exist", "... cannot be read: Permission denied", "... is a
// FIFO, not a regular file".
Fd open_regular_file(const std::filesystem::path& file, std::string_view what = "file");

// Limits of whole-file reads (a larger file is refused with its size and the limit).
inline constexpr uint64_t kMaxSmallFileBytes = 4096;              // pointers such as `latest`
inline constexpr uint64_t kMaxTextFileBytes = uint64_t{1} << 26;  // configs, manifests: 64 MiB

// A read-only, private mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  // Throws Error naming the file (`what` says what it is, as for open_regular_file).
  explicit MappedFile(const std::filesystem::path& file, std::string_view what = "file");
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// The whole of `file`, at most `max_bytes` of it (a larger file is an error naming both sizes).
std::string read_file(const std::filesystem::path& file, uint64_t max_bytes,
                      std::string_view what = "file");

// A log-like file written line by line: each write goes to the kernel at once (a crash or a
// signal never loses what was written), and a failure is an Error with the file and errno's
// reason ("No space left on device").
class AppendFile {
 public:
  // append: continue the file; otherwise start it empty.
  AppendFile(const std::filesystem::path& file, bool append);
  void write(std::string_view text);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  Fd fd_;
};

// fsync of a file or a directory (after a rename, the directory, so the rename is durable).
// Throws Error naming the path.
void fsync_path(const std::filesystem::path& path);

// Writes the concatenation of `parts` to `file` atomically.
void write_file_atomic(const std::filesystem::path& file,
                       std::span<const std::span<const std::byte>> parts);
void write_file_atomic(const std::filesystem::path& file, std::string_view text);

}  // namespace moetron::data
