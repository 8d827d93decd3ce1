// `moetron prepare` as a library call: text files in, a dataset directory (shards + manifest) out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/stop.h"
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
  // SentencePiece: accept text that is not valid UTF-8 (invalid bytes become U+FFFD) instead
  // of stopping at the first invalid byte.
  bool allow_invalid_utf8 = false;
  // An existing dataset at `output` is replaced only with this set (and only what moetron wrote
  // there, data/staged_dir.h).
  bool overwrite = false;
  // Polled between documents and files: a stop throws Stopped and leaves `output` as it was.
  StopToken stop;
};

struct PrepareResult {
  Manifest manifest;
  uint64_t files = 0, skipped_files = 0;
  uint64_t invalid_utf8_files = 0;  // with allow_invalid_utf8: files whose bytes were replaced
  double tokenizer_seconds = 0, total_seconds = 0;
};

// Builds the dataset in a staging directory beside the output (OUTPUT.partial-PID) and moves it
// into place only when complete: an existing dataset at OUTPUT (with `overwrite`) is swapped out
// atomically (renameat2 RENAME_EXCHANGE) and then removed, so a failed or killed prepare leaves
// the old dataset untouched. Refuses an output inside an input (or an input, or the
// SentencePiece model, inside the output) and an existing output that holds anything moetron
// did not write. Stale staging directories of dead processes are removed. Throws Error on bad
// options or input.
PrepareResult prepare_dataset(const PrepareOptions& options);

}  // namespace moetron::data
