// Choosing the next token from logits (docs/generate.md). Greedy at temperature 0: the argmax
// (ties to the lower id). Otherwise a draw from softmax(logits / temperature) restricted to the
// nucleus: the fewest most probable tokens whose probabilities sum to at least top_p (ties in
// probability ordered by id), renormalised. Draws come from one generator seeded by `seed`, one
// uniform number per draw, so a seed reproduces a generation exactly.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace moetron {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;
};

// A distribution over the vocabulary, in double so the nucleus and the draws do not depend on
// how fp32 rounding orders near-equal probabilities.
using Distribution = std::vector<double>;

class Sampler {
 public:
  // Throws Error on a negative or non-finite temperature or top_p outside (0, 1].
  explicit Sampler(const SamplingOptions& options);

  bool greedy() const { return options_.temperature == 0.0f; }
  static int32_t argmax(std::span<const float> logits);
  // The distribution the next token is drawn from (one-hot at the argmax when greedy).
  Distribution distribution(std::span<const float> logits) const;
  // A token from `logits`: the argmax when greedy, else a draw from distribution(logits).
  int32_t sample(std::span<const float> logits);
  // A draw from `p` (sums to 1, or to any positive total: it is normalised).
  int32_t draw(const Distribution& p);
  double uniform();  // in [0, 1), 53 random bits

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace moetron
