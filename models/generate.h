// Generation loops over a Decoder (docs/generate.md): plain decoding, one main-model forward
// per token; and self-speculative decoding with the model's MTP modules as the draft model
// (DeepSeek-V3 sec. 5.4.3): module k drafts token n + k from the main model's state chained
// through modules 1 .. k - 1 and the embedding of token n + k - 1, then one batched main
// forward over [t_n, drafts] verifies them. Greedy speculative output equals greedy plain
// output token for token; with sampling, drafts are accepted by the speculative-sampling rule
// (Leviathan et al. 2023), so the output follows the same distribution as plain sampling.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/decoder.h"
#include "models/sampler.h"

namespace moetron {

struct GenerateOptions {
  int64_t max_tokens = 100;
  SamplingOptions sampling;
  int64_t vocab = 0;  // draw only ids below this (the tokenizer's vocabulary); 0: every id
  // Called with each token of the continuation as soon as it is decided, in order (to stream
  // it, or to stop: whatever it throws ends the generation).
  std::function<void(int32_t)> on_token = {};
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // the continuation: max_tokens ids
  double prefill_seconds = 0;   // the prompt's forward and the first token
  double total_seconds = 0;     // the whole generation, prefill included
  int64_t main_forwards = 0;    // main-model forward passes, the prompt's included
  // Speculative decoding: per draft depth k = 1..D (index k - 1), the drafts proposed (one in
  // every round with room for it) and accepted (which takes every draft before it accepted),
  // and the time spent drafting (the MTP passes and their sampling).
  std::vector<int64_t> drafted, accepted;
  double draft_seconds = 0;

  double tokens_per_second() const {
    return total_seconds > 0 ? static_cast<double>(tokens.size()) / total_seconds : 0.0;
  }
  int64_t total_drafted() const;
  int64_t total_accepted() const;
};

// The decoder's max_len must hold prompt + max_tokens positions (+ D for speculative); it is
// reset first.
GenerateResult generate(Decoder& decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options);
// Throws Error when the model has no MTP module.
GenerateResult generate_speculative(Decoder& decoder, std::span<const int32_t> prompt,
                                    const GenerateOptions& options);

// The max_len a decoder needs for these calls.
int64_t generation_max_len(int64_t prompt_tokens, int64_t max_tokens, int64_t mtp_depth);

}  // namespace moetron
