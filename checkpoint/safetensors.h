// Writing the safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes
// of JSON header ({"__metadata__": {...}, NAME: {"dtype", "shape", "data_offsets": [begin, end]},
// ...}, offsets relative to the end of the header), then the tensors' bytes, row-major,
// little-endian, without gaps. The header is padded with spaces so the data starts 8-aligned.
//
// The writer streams: the header is computed from the tensor list alone, then each tensor's
// values are appended in pieces, converted on the way (fp32 -> bf16 rounds to nearest even).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/bf16.h"

namespace moetron::checkpoint {

enum class StDtype : uint8_t { f32, bf16 };
const char* st_dtype_name(StDtype dtype);  // "F32", "BF16": the names in the header
uint64_t st_dtype_size(StDtype dtype);

using ::moetron::to_bf16;  // core/bf16.h

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::f32;
  std::vector<uint64_t> shape;
  uint64_t bytes() const;
};

// The header JSON (padded) of a file holding `tensors` in this order, metadata first.
std::string safetensors_header(std::span<const StTensor> tensors,
                               const std::map<std::string, std::string>& metadata);

// One .safetensors file written front to back: the header at construction, then the values of
// each tensor in the order given, in any number of pieces. close() checks that every byte was
// written, flushes and fsyncs; the destructor of an unclosed writer leaves a partial file (the
// caller removes its staging directory).
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::filesystem::path& file, std::vector<StTensor> tensors,
                    const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next values of the current tensor (row-major); moves on to the next tensor once one is
  // complete. Throws Error naming the file and tensor when given more values than it holds.
  void append(std::span<const float> values);
  void close();
  uint64_t data_bytes() const { return data_bytes_; }  // the tensors' bytes, header excluded

 private:
  void write(const void* data, size_t bytes);

  std::filesystem::path file_;
  std::vector<StTensor> tensors_;
  int fd_ = -1;
  size_t current_ = 0;          // the tensor being written
  uint64_t written_ = 0;        // elements of the current tensor written
  uint64_t data_bytes_ = 0;     // of every tensor
  std::vector<uint16_t> bf16_;  // conversion buffer
};

}  // namespace moetron::checkpoint
