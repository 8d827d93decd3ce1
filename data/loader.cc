#include "data/loader.h"

#include "core/check.h"
#include "data/hash.h"

namespace moetron::data {

using detail::concat;

Loader::Loader(const Dataset& ds, int window, int batch, uint64_t seed, int rank, int world)
    : ds_(ds),
      window_(window),
      batch_(batch),
      rank_(rank),
      world_(world),
      seed_key_(splitmix64(seed)) {
  if (window < 1 || batch < 1)
    throw Error(concat("loader: window (", window, ") and batch (", batch, ") must be >= 1"));
  if (world < 1 || rank < 0 || rank >= world)
    throw Error(concat("loader: rank ", rank, " is outside [0, world=", world, ")"));
  if (ds.num_tokens() < static_cast<uint64_t>(window))
    throw Error(concat("loader: the ", split_name(ds.split()), " split has ", ds.num_tokens(),
                       " tokens, fewer than one window of ", window,
                       " (seq_len + 1 + mtp depth); prepare more text or shorten the sequence"));
}

uint64_t Loader::window_start(uint64_t draw, int row) const {
  const uint64_t sample =
      (draw * static_cast<uint64_t>(world_) + static_cast<uint64_t>(rank_)) * batch_ + row;
  // Counter-based: two rounds of splitmix64 keyed by the seed, so any sample is computed
  // directly (resume is a seek) and neighbouring samples are uncorrelated.
  const uint64_t h = splitmix64(splitmix64(seed_key_ ^ sample) + seed_key_);
  const uint64_t positions = ds_.num_tokens() - static_cast<uint64_t>(window_) + 1;
  // Multiply-shift maps h onto [0, positions); its bias is below positions / 2^64.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(h) * positions) >> 64);
}

void Loader::next(std::span<int32_t> tokens) {
  MOETRON_CHECK(tokens.size() == static_cast<size_t>(batch_) * window_, "need ", batch_, "x",
                window_, " tokens, got ", tokens.size());
  for (int row = 0; row < batch_; ++row)
    ds_.copy(window_start(cursor_.draws, row),
             tokens.subspan(static_cast<size_t>(row) * window_, window_));
  cursor_.draws++;
}

}  // namespace moetron::data
