// Hashes used by the data pipeline: FNV-1a 64 for checksums and identities, splitmix64 as the
// counter-based mixer behind the validation split and the loader's window positions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace moetron::data {

inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ull;
inline constexpr uint64_t kFnv1a64Prime = 0x100000001b3ull;

// FNV-1a 64 over `bytes`, continuing from `h` so a checksum can be built piecewise.
inline uint64_t fnv1a64(std::span<const std::byte> bytes, uint64_t h = kFnv1a64Offset) {
  for (std::byte b : bytes) h = (h ^ static_cast<uint8_t>(b)) * kFnv1a64Prime;
  return h;
}

inline uint64_t fnv1a64(std::string_view text, uint64_t h = kFnv1a64Offset) {
  return fnv1a64(std::as_bytes(std::span(text.data(), text.size())), h);
}

// splitmix64 (Steele, Lea, Flood 2014): a bijective mixer with full avalanche.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// 16 lowercase hex digits, and back (false on anything else).
std::string hex64(uint64_t value);
bool parse_hex64(std::string_view text, uint64_t& value);

}  // namespace moetron::data
