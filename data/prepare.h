// `moetron prepare` as a library call: text files in, a dataset directory (shards + manifest) out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/manifest.h"

namespace moetron::data {

struct PrepareOptions {
  std::vector<std::filesystem::path> inputs;
  std::filesystem::path output;
  std::string tokenizer = "byte";  // "byte" or "sentencepiece"
  int vocab_size = 0;              // sentencepiece training; 0 = default 4096
  std::filesystem::path sp_model;  // an existing SentencePiece model instead of training one
  double val_fraction = 0.05;
  uint64_t shard_tokens = uint64_t{1} << 24;
  bool fortunes = false;
};

struct PrepareResult {
  Manifest manifest;
  uint64_t files = 0, skipped_files = 0;
  double tokenizer_seconds = 0, total_seconds = 0;
};

// Writes shards atomically and manifest.json last (removing any old manifest first), so the
// directory is either a complete dataset or has no manifest. Throws Error on bad options or input.
PrepareResult prepare_dataset(const PrepareOptions& options);

}  // namespace moetron::data
