// Files the data pipeline reads and writes: read-only memory maps, whole-file reads, and atomic
// writes (temp file, fsync, rename) so a crash never leaves a half-written shard or manifest
// under its final name.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace moetron::data {

// A read-only, private mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& file);  // throws Error naming the file
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

std::string read_file(const std::filesystem::path& file);  // throws Error naming the file

// fsync of a file or a directory (after a rename, the directory, so the rename is durable).
// Throws Error naming the path.
void fsync_path(const std::filesystem::path& path);

// Writes the concatenation of `parts` to `file` atomically.
void write_file_atomic(const std::filesystem::path& file,
                       std::span<const std::span<const std::byte>> parts);
void write_file_atomic(const std::filesystem::path& file, std::string_view text);

}  // namespace moetron::data
