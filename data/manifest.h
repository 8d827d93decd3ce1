// manifest.json: the table of contents of a prepared dataset directory. `moetron prepare`
// writes it last, so its presence means every shard it lists was completely written.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace moetron::data {

enum class Split { train, val };
std::string_view split_name(Split split);  // "train" / "val"

inline constexpr int kManifestVersion = 1;
inline constexpr const char* kManifestFile = "manifest.json";

struct ShardEntry {
  std::string file;  // relative to the dataset directory
  uint64_t tokens = 0;
  uint64_t checksum = 0;  // the shard's payload checksum (FNV-1a 64)
};

struct SplitEntry {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  std::vector<ShardEntry> shards;
};

struct Manifest {
  std::string tokenizer_kind;  // "byte" or "sentencepiece"
  int vocab_size = 0;
  std::string tokenizer_identity;
  std::string tokenizer_model;  // model file name inside the directory; empty for "byte"
  uint32_t token_width = 2;
  SplitEntry train, val;
  // Provenance, informational only.
  std::vector<std::string> inputs;
  bool fortunes = false;
  double val_fraction = 0;

  const SplitEntry& split(Split s) const { return s == Split::train ? train : val; }
  SplitEntry& split(Split s) { return s == Split::train ? train : val; }
};

std::string manifest_to_json(const Manifest& m);
// What the tokens of a dataset are, in 23 characters: "tokens:" and 16 hex digits of a hash over
// the tokenizer's identity and every shard's name, token count and checksum. Two datasets
// prepared alike from the same text have the same identity; other text, another tokenizer or
// another split gives another one. Checkpoints record it (docs/checkpoint.md).
std::string dataset_identity(const Manifest& m);
void write_manifest(const std::filesystem::path& dir, const Manifest& m);  // atomic
// Throws Error naming the file and the offending field.
Manifest read_manifest(const std::filesystem::path& dir);

// The tokenizer a dataset was prepared with, checked against the manifest's identity.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir, const Manifest& m);

}  // namespace moetron::data
