// Helpers shared by the data tests: scratch directories and small files.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "data/hash.h"
#include "data/manifest.h"
#include "data/shard_format.h"

namespace moetron::data::testing {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("moetron_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::filesystem::path& file, std::string_view text) {
  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary)
      .write(text.data(), static_cast<std::streamsize>(text.size()));
}

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Deterministic English-like text: `lines` lines of words drawn from a fixed list.
inline std::string generated_corpus(int lines, uint64_t seed = 1) {
  static const char* kWords[] = {"the",   "quick", "brown",  "fox",   "jumps",   "over",   "lazy",
                                 "dog",   "moe",   "expert", "token", "router",  "gate",   "layer",
                                 "train", "shard", "loss",   "model", "mixture", "sparse", "42",
                                 "a",     "of",    "and",    "in",    "to",      "is",     "was"};
  std::string out;
  uint64_t h = seed;
  for (int l = 0; l < lines; ++l) {
    const int n = 4 + static_cast<int>((h = splitmix64(h)) % 9);
    for (int w = 0; w < n; ++w) {
      out += kWords[(h = splitmix64(h)) % std::size(kWords)];
      out += w + 1 < n ? " " : ".\n";
    }
  }
  return out;
}

// Writes `files` generated documents, DIR/0.txt ... (`lines` lines each; seeds from
// `first_seed`), for tests that prepare a dataset; returns DIR.
inline std::filesystem::path write_generated_corpus(const std::filesystem::path& dir, int files,
                                                    int lines, uint64_t first_seed) {
  for (int i = 0; i < files; ++i)
    write_text(dir / (std::to_string(i) + ".txt"),
               generated_corpus(lines, first_seed + static_cast<uint64_t>(i)));
  return dir;
}

// Writes a dataset directory by hand: one shard per entry of `shards` for the train split.
inline Manifest write_dataset(const std::filesystem::path& dir,
                              const std::vector<std::vector<int32_t>>& shards, int vocab = 1000,
                              const std::string& identity = "test-tokenizer") {
  std::filesystem::create_directories(dir);
  Manifest m;
  m.tokenizer_kind = "byte";
  m.vocab_size = vocab;
  m.tokenizer_identity = identity;
  m.token_width = token_width_for_vocab(vocab);
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = "train-" + std::to_string(i) + ".bin";
    const ShardHeader h = write_shard(dir / name, shards[i], vocab, identity);
    m.train.shards.push_back({name, h.num_tokens, h.payload_checksum});
    m.train.tokens += h.num_tokens;
    m.train.documents++;
  }
  write_manifest(dir, m);
  return m;
}

}  // namespace moetron::data::testing
