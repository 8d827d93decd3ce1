#include "data/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/check.h"

namespace moetron::data {
namespace {

using detail::concat;

std::string errno_text() {
  return std::strerror(errno);
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd::Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

int Fd::close() {
  return ::close(std::exchange(fd_, -1));
}

Fd open_regular_file(const std::filesystem::path& file, std::string_view what) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  Fd fd(::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) throw Error(concat(what, " ", file, " does not exist"));
    throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
  if (!S_ISREG(st.st_mode))
    throw Error(concat(what, " ", file, " is ", kind_of(st.st_mode),
                       ", not a regular file; moetron reads regular files only"));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
    throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
  return fd;
}

MappedFile::MappedFile(const std::filesystem::path& file, std::string_view what) : path_(file) {
  const Fd fd = open_regular_file(file, what);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) return;  // mmap rejects length 0; an empty span is the right view
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) throw Error(concat("cannot mmap ", what, " ", file, ": ", errno_text()));
  data_ = static_cast<const std::byte*>(p);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

std::string read_file(const std::filesystem::path& file, uint64_t max_bytes,
                      std::string_view what) {
  const Fd fd = open_regular_file(file, what);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes)
    throw Error(concat(what, " ", file, " holds ", size, " bytes, more than the ", max_bytes,
                       " such a file may hold; it is not one moetron wrote"));
  std::string out(size, '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd.get(), out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(concat(what, " ", file, " cannot be read: ", errno_text()));
    if (n == 0) break;  // shrank meanwhile
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

AppendFile::AppendFile(const std::filesystem::path& file, bool append)
    : path_(file),
      fd_(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC),
                 0644)) {
  if (fd_.get() < 0) throw Error(concat("cannot open ", file, " for writing: ", errno_text()));
}

void AppendFile::write(std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd_.get(), text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(concat("cannot write ", path_, ": ", errno_text()));
    text.remove_prefix(static_cast<size_t>(n));
  }
}

void write_file_atomic(const std::filesystem::path& file,
                       std::span<const std::span<const std::byte>> parts) {
  // The pid keeps concurrent writers (e.g. two prepare runs) off each other's temp files.
  std::filesystem::path tmp = file;
  tmp += concat(".tmp.", ::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) throw Error(concat("cannot create ", tmp, ": ", errno_text()));
  try {
    for (auto part : parts) {
      const std::byte* p = part.data();
      size_t left = part.size();
      while (left > 0) {
        ssize_t n = ::write(fd.get(), p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(concat("cannot write ", tmp, ": ", errno_text()));
        p += n;
        left -= static_cast<size_t>(n);
      }
    }
    if (::fsync(fd.get()) != 0) throw Error(concat("cannot fsync ", tmp, ": ", errno_text()));
    if (fd.close() != 0) throw Error(concat("cannot close ", tmp, ": ", errno_text()));
    if (::rename(tmp.c_str(), file.c_str()) != 0)
      throw Error(concat("cannot rename ", tmp, " to ", file, ": ", errno_text()));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

void write_file_atomic(const std::filesystem::path& file, std::string_view text) {
  const std::span<const std::byte> part = std::as_bytes(std::span(text.data(), text.size()));
  write_file_atomic(file, std::span(&part, 1));
}

void fsync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(concat("cannot open ", path, " to sync it: ", errno_text()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(concat("fsync of ", path, " failed: ", errno_text()));
}

}  // namespace moetron::data
