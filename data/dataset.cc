#include <algorithm>

#include "core/check.h"
#include "data/loader.h"

namespace moetron::data {

using detail::concat;

Dataset::Dataset(const std::filesystem::path& dir, Split split)
    : manifest_(read_manifest(dir)), split_(split) {
  const SplitEntry& entry = manifest_.split(split);
  const auto manifest_file = dir / kManifestFile;
  for (const ShardEntry& e : entry.shards) {
    const auto file = dir / e.file;
    ShardReader shard(file);
    const ShardHeader& h = shard.header();
    auto fail = [&](const std::string& what) {
      throw Error(concat("token shard ", file, ": ", what));
    };
    if (h.tokenizer_identity != manifest_.tokenizer_identity)
      fail(concat("tokenizer identity \"", h.tokenizer_identity, "\" differs from \"",
                  manifest_.tokenizer_identity, "\" in ", manifest_file,
                  " (shard from another dataset?)"));
    if (h.vocab_size != static_cast<uint32_t>(manifest_.vocab_size))
      fail(concat("vocab size ", h.vocab_size, " differs from ", manifest_.vocab_size, " in ",
                  manifest_file));
    if (h.num_tokens != e.tokens)
      fail(concat(h.num_tokens, " tokens but ", manifest_file, " lists ", e.tokens));
    if (h.payload_checksum != e.checksum)
      fail(concat("payload checksum differs from the one in ", manifest_file,
                  " (shard replaced after prepare?)"));
    starts_.push_back(num_tokens_);
    num_tokens_ += h.num_tokens;
    shards_.push_back(std::move(shard));
  }
}

int32_t Dataset::token(uint64_t index) const {
  int32_t t;
  copy(index, std::span(&t, 1));
  return t;
}

void Dataset::copy(uint64_t begin, std::span<int32_t> out) const {
  MOETRON_CHECK(begin <= num_tokens_ && out.size() <= num_tokens_ - begin, "range [", begin, ", +",
                out.size(), ") outside split of ", num_tokens_, " tokens");
  // The shard holding `begin`: the last one starting at or before it (empty shards are skipped
  // naturally because the next shard shares their start).
  size_t s = std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin() - 1;
  uint64_t pos = begin;
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t offset = pos - starts_[s];
    const size_t n = static_cast<size_t>(
        std::min<uint64_t>(out.size() - done, shards_[s].num_tokens() - offset));
    shards_[s].copy(offset, out.subspan(done, n));
    done += n;
    pos += n;
    s++;
  }
}

}  // namespace moetron::data
