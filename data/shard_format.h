// The token shard file: a 256-byte versioned header, then the tokens little-endian.
//
//   offset size  field
//        0    8  magic "MTOKSHRD"
//        8    4  u32 version (1)
//       12    4  u32 token width in bytes: 2 (u16, vocab <= 65536) or 4 (u32)
//       16    8  u64 token count
//       24    4  u32 vocab size
//       28    4  u32 tokenizer identity length (<= 192)
//       32  192  tokenizer identity, zero padded
//      224    8  u64 payload checksum: FNV-1a 64 of the token bytes as stored
//      232   16  reserved, zero
//      248    8  u64 header checksum: FNV-1a 64 of bytes [0, 248)
//      256       token_count * width bytes of tokens
//
// All integers are little-endian. The payload starts 256-aligned, so a mapped shard can be read
// as an array of u16/u32 directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "data/file_io.h"

namespace moetron::data {

inline constexpr char kShardMagic[8] = {'M', 'T', 'O', 'K', 'S', 'H', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 256;
inline constexpr size_t kMaxIdentityBytes = 192;

// Bytes per stored token: the narrowest unsigned type that holds every id of the vocab.
uint32_t token_width_for_vocab(int vocab_size);

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_width = 2;
  uint64_t num_tokens = 0;
  uint32_t vocab_size = 0;
  std::string tokenizer_identity;
  uint64_t payload_checksum = 0;
};

// Writes `tokens` as a shard file, atomically; returns the header written. Throws Error when a
// token is outside [0, vocab_size) or the identity is too long.
ShardHeader write_shard(const std::filesystem::path& file, std::span<const int32_t> tokens,
                        int vocab_size, std::string_view tokenizer_identity);

// A memory-mapped shard whose header, size and payload checksum were verified at open: every
// problem is an Error naming the file (bad magic, unknown version, corrupt header, truncated or
// oversized file, checksum mismatch).
class ShardReader {
 public:
  explicit ShardReader(const std::filesystem::path& file);

  const ShardHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return map_.path(); }
  uint64_t num_tokens() const { return header_.num_tokens; }
  // Tokens [begin, begin + out.size()) widened to int32; the range must lie inside the shard.
  void copy(uint64_t begin, std::span<int32_t> out) const;

 private:
  MappedFile map_;
  ShardHeader header_;
};

}  // namespace moetron::data
