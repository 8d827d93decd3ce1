// moetron's main-head logits of a checkpoint on deterministic tokens: shared by the export test
// and the export_logits program.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/hash.h"
#include "models/model.h"
#include "parallel/process_groups.h"

namespace moetron::testing {

// Builds the model of `cfg` (the checkpoint's saved config) for batch x seq tokens, loads the
// checkpoint's weights, draws the tokens uniformly from [0, vocab_size) with `seed` into
// `tokens`, and returns the logits [batch * seq, vocab_size].
inline Tensor checkpoint_logits(const std::filesystem::path& ckpt, const config::RunConfig& cfg,
                                int64_t batch, int64_t seq, uint64_t seed,
                                std::vector<int32_t>& tokens) {
  const ProcessGroups groups;
  Model model(cfg.model(), batch, seq);
  checkpoint::load(ckpt, model.params(), nullptr, cfg, groups);
  tokens.resize(static_cast<size_t>(batch * seq));
  uint64_t h = seed;
  for (int32_t& t : tokens)
    t = static_cast<int32_t>((h = data::splitmix64(h)) %
                             static_cast<uint64_t>(cfg.model().vocab_size()));
  return model.logits(tokens);
}

}  // namespace moetron::testing
