#include "data/shard_format.h"

#include <bit>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "data/hash.h"

namespace moetron::data {
namespace {

using detail::concat;

static_assert(std::endian::native == std::endian::little,
              "shards are little-endian and read in place");

constexpr size_t kPayloadChecksumOffset = 224;
constexpr size_t kHeaderChecksumOffset = 248;

template <typename T>
void put(std::byte* header, size_t offset, T value) {
  std::memcpy(header + offset, &value, sizeof(T));
}

template <typename T>
T get(std::span<const std::byte> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

template <typename T>
std::vector<std::byte> narrow(std::span<const int32_t> tokens) {
  std::vector<std::byte> out(tokens.size() * sizeof(T));
  for (size_t i = 0; i < tokens.size(); ++i) {
    const T v = static_cast<T>(tokens[i]);
    std::memcpy(out.data() + i * sizeof(T), &v, sizeof(T));
  }
  return out;
}

template <typename T>
void widen(const std::byte* src, std::span<int32_t> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    out[i] = static_cast<int32_t>(v);
  }
}

}  // namespace

uint32_t token_width_for_vocab(int vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

ShardHeader write_shard(const std::filesystem::path& file, std::span<const int32_t> tokens,
                        int vocab_size, std::string_view tokenizer_identity) {
  if (tokenizer_identity.size() > kMaxIdentityBytes)
    throw Error(concat(file, ": tokenizer identity is ", tokenizer_identity.size(),
                       " bytes, at most ", kMaxIdentityBytes, " fit the shard header"));
  if (vocab_size <= 0) throw Error(concat(file, ": vocab size must be positive, got ", vocab_size));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab_size)
      throw Error(concat(file, ": token ", tokens[i], " at position ", i, " is outside [0, ",
                         vocab_size, ")"));

  ShardHeader h;
  h.token_width = token_width_for_vocab(vocab_size);
  h.num_tokens = tokens.size();
  h.vocab_size = static_cast<uint32_t>(vocab_size);
  h.tokenizer_identity = tokenizer_identity;
  const std::vector<std::byte> payload =
      h.token_width == 2 ? narrow<uint16_t>(tokens) : narrow<uint32_t>(tokens);
  h.payload_checksum = fnv1a64(payload);

  std::byte header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, sizeof(kShardMagic));
  put<uint32_t>(header, 8, h.version);
  put<uint32_t>(header, 12, h.token_width);
  put<uint64_t>(header, 16, h.num_tokens);
  put<uint32_t>(header, 24, h.vocab_size);
  put<uint32_t>(header, 28, static_cast<uint32_t>(tokenizer_identity.size()));
  std::memcpy(header + 32, tokenizer_identity.data(), tokenizer_identity.size());
  put<uint64_t>(header, kPayloadChecksumOffset, h.payload_checksum);
  put<uint64_t>(header, kHeaderChecksumOffset,
                fnv1a64(std::span<const std::byte>(header, kHeaderChecksumOffset)));

  const std::span<const std::byte> parts[] = {std::span<const std::byte>(header), payload};
  write_file_atomic(file, parts);
  return h;
}

ShardReader::ShardReader(const std::filesystem::path& file) : map_(file, "shard") {
  const auto bytes = map_.bytes();
  auto fail = [&](const std::string& what) {
    throw Error(concat("token shard ", file, ": ", what));
  };
  // Magic and version come before the header checksum so that a non-shard file or a future
  // format is reported as such rather than as corruption.
  if (bytes.size() < sizeof(kShardMagic) ||
      std::memcmp(bytes.data(), kShardMagic, sizeof(kShardMagic)) != 0)
    fail("bad magic: not a moetron token shard (expected \"MTOKSHRD\")");
  if (bytes.size() < kShardHeaderBytes)
    fail(concat("truncated: ", bytes.size(), " bytes, shorter than the ", kShardHeaderBytes,
                "-byte header"));
  header_.version = get<uint32_t>(bytes, 8);
  if (header_.version != kShardVersion)
    fail(concat("unknown version ", header_.version, " (this build reads version ", kShardVersion,
                ")"));
  if (get<uint64_t>(bytes, kHeaderChecksumOffset) != fnv1a64(bytes.first(kHeaderChecksumOffset)))
    fail("header checksum mismatch: the header is corrupt");
  header_.token_width = get<uint32_t>(bytes, 12);
  header_.num_tokens = get<uint64_t>(bytes, 16);
  header_.vocab_size = get<uint32_t>(bytes, 24);
  const uint32_t identity_len = get<uint32_t>(bytes, 28);
  header_.payload_checksum = get<uint64_t>(bytes, kPayloadChecksumOffset);
  if (header_.token_width != 2 && header_.token_width != 4)
    fail(concat("token width ", header_.token_width, " bytes; valid: 2 (u16) or 4 (u32)"));
  if (identity_len > kMaxIdentityBytes)
    fail(concat("tokenizer identity length ", identity_len, " exceeds ", kMaxIdentityBytes));
  header_.tokenizer_identity.assign(reinterpret_cast<const char*>(bytes.data()) + 32, identity_len);

  const uint64_t payload_bytes = header_.num_tokens * header_.token_width;
  const uint64_t expected = kShardHeaderBytes + payload_bytes;
  if (header_.num_tokens > (UINT64_MAX - kShardHeaderBytes) / header_.token_width ||
      bytes.size() < expected)
    fail(concat("truncated: header says ", header_.num_tokens, " tokens (", expected,
                " bytes) but the file has ", bytes.size(), " bytes"));
  if (bytes.size() > expected)
    fail(concat("file has ", bytes.size() - expected, " bytes after the ", header_.num_tokens,
                " tokens the header declares"));
  // One pass over the payload at open: cheap next to training, and it turns silent bit rot into
  // an error that names the file.
  const uint64_t actual = fnv1a64(bytes.subspan(kShardHeaderBytes));
  if (actual != header_.payload_checksum)
    fail(concat("payload checksum mismatch: header says ", hex64(header_.payload_checksum),
                ", tokens hash to ", hex64(actual), " (the file is corrupt)"));
}

void ShardReader::copy(uint64_t begin, std::span<int32_t> out) const {
  MOETRON_CHECK(begin <= header_.num_tokens && out.size() <= header_.num_tokens - begin, "range [",
                begin, ", +", out.size(), ") outside shard of ", header_.num_tokens);
  const std::byte* src = map_.bytes().data() + kShardHeaderBytes + begin * header_.token_width;
  if (header_.token_width == 2)
    widen<uint16_t>(src, out);
  else
    widen<uint32_t>(src, out);
}

}  // namespace moetron::data
