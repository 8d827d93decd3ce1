// Reading a prepared dataset: Dataset maps one split's shards as one token stream; Loader draws
// fixed-length windows from it at deterministic, resumable random positions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "data/manifest.h"
#include "data/shard_format.h"

namespace moetron::data {

// Every shard of one split, memory-mapped and verified at construction: header, file size and
// payload checksum of each shard, and agreement with manifest.json (tokenizer identity, vocab,
// token count, checksum). Any mismatch throws Error naming the file.
class Dataset {
 public:
  Dataset(const std::filesystem::path& dir, Split split);

  int vocab_size() const { return manifest_.vocab_size; }
  const std::string& tokenizer_identity() const { return manifest_.tokenizer_identity; }
  const Manifest& manifest() const { return manifest_; }
  Split split() const { return split_; }
  uint64_t num_tokens() const { return num_tokens_; }

  int32_t token(uint64_t index) const;
  // Tokens [begin, begin + out.size()) of the concatenated split; may cross shard boundaries.
  void copy(uint64_t begin, std::span<int32_t> out) const;

 private:
  Manifest manifest_;
  Split split_;
  std::vector<ShardReader> shards_;
  std::vector<uint64_t> starts_;  // first global index of each shard
  uint64_t num_tokens_ = 0;
};

// Resumable loader position: the number of next() calls made so far.
struct LoaderCursor {
  uint64_t draws = 0;
};

// Sample s = (draw * world + rank) * batch + row starts at a position hashed from (seed, s),
// uniform over [0, num_tokens - window]. Because s counts over the global batch, the windows a
// world of W ranks with batch B draws are exactly those one rank with batch W*B draws.
class Loader {
 public:
  // `ds` must outlive the loader. Throws Error when the split holds fewer than `window` tokens
  // or an argument is invalid.
  Loader(const Dataset& ds, int window, int batch, uint64_t seed, int rank = 0, int world = 1);

  // Fills batch * window tokens, row-major [batch][window], and advances the cursor.
  void next(std::span<int32_t> tokens);
  LoaderCursor cursor() const { return cursor_; }
  void seek(LoaderCursor c) { cursor_ = c; }

  const Dataset& dataset() const { return ds_; }
  int window() const { return window_; }
  int batch() const { return batch_; }
  // Where row `row` of draw `draw` starts in the split's token stream.
  uint64_t window_start(uint64_t draw, int row) const;

 private:
  const Dataset& ds_;
  int window_, batch_, rank_, world_;
  uint64_t seed_key_;
  LoaderCursor cursor_;
};

}  // namespace moetron::data
