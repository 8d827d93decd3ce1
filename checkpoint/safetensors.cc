#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "data/json.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;

uint64_t numel(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

}  // namespace

const char* st_dtype_name(StDtype dtype) {
  return dtype == StDtype::f32 ? "F32" : "BF16";
}

uint64_t st_dtype_size(StDtype dtype) {
  return dtype == StDtype::f32 ? 4 : 2;
}

uint64_t StTensor::bytes() const {
  return numel(shape) * st_dtype_size(dtype);
}

std::string safetensors_header(std::span<const StTensor> tensors,
                               const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ',';
      first = false;
      h += data::json_quote(k) + ":" + data::json_quote(v);
    }
    h += "}";
  }
  uint64_t at = 0;
  for (const StTensor& t : tensors) {
    if (h.size() > 1) h += ',';
    h += data::json_quote(t.name) + ":{\"dtype\":\"" + st_dtype_name(t.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i > 0) h += ',';
      h += std::to_string(t.shape[i]);
    }
    h += "],\"data_offsets\":[" + std::to_string(at) + "," + std::to_string(at + t.bytes()) + "]}";
    at += t.bytes();
  }
  h += "}";
  h.append((8 - (8 + h.size()) % 8) % 8, ' ');  // the data starts at a multiple of 8
  return h;
}

SafetensorsWriter::SafetensorsWriter(const std::filesystem::path& file,
                                     std::vector<StTensor> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : file_(file), tensors_(std::move(tensors)) {
  const std::string header = safetensors_header(tensors_, metadata);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(concat("cannot create ", file, ": ", std::strerror(errno)));
  try {
    write(length, sizeof length);
    write(header.data(), header.size());
  } catch (...) {
    ::close(fd_);  // the destructor does not run for a constructor that throws
    throw;
  }
  while (current_ < tensors_.size() && tensors_[current_].bytes() == 0) ++current_;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsWriter::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(concat("writing ", file_, " failed: ", std::strerror(errno)));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void SafetensorsWriter::append(std::span<const float> values) {
  while (!values.empty()) {
    if (current_ >= tensors_.size())
      throw Error(concat(file_, ": ", values.size(), " values past the last tensor"));
    const StTensor& t = tensors_[current_];
    const uint64_t take = std::min<uint64_t>(values.size(), numel(t.shape) - written_);
    const std::span<const float> part = values.first(take);
    if (t.dtype == StDtype::f32) {
      static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");
      write(part.data(), part.size_bytes());
    } else {
      bf16_.resize(part.size());
      for (size_t i = 0; i < part.size(); ++i) bf16_[i] = to_bf16(part[i]);
      write(bf16_.data(), bf16_.size() * sizeof(uint16_t));
    }
    data_bytes_ += take * st_dtype_size(t.dtype);
    written_ += take;
    values = values.subspan(take);
    if (written_ == numel(t.shape)) {
      written_ = 0;
      ++current_;
      while (current_ < tensors_.size() && tensors_[current_].bytes() == 0) ++current_;
    }
  }
}

void SafetensorsWriter::close() {
  if (fd_ < 0) return;
  if (current_ < tensors_.size())
    throw Error(concat(file_, ": tensor ", tensors_[current_].name, " is incomplete (", written_,
                       " of ", numel(tensors_[current_].shape), " values written)"));
  if (::fsync(fd_) != 0) throw Error(concat("fsync of ", file_, " failed: ", std::strerror(errno)));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw Error(concat("closing ", file_, " failed: ", std::strerror(errno)));
  bf16_ = {};
}

}  // namespace moetron::checkpoint
