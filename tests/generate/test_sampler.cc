// The sampler: greedy ties, temperature, the top-p nucleus, seeded reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/check.h"
#include "models/sampler.h"

namespace moetron {
namespace {

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  l.reserve(p.size());
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

TEST(Sampler, GreedyIsTheArgmaxWithTiesToTheLowerId) {
  Sampler s({});
  EXPECT_TRUE(s.greedy());
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 2.0f, -1.0f, 2.0f}), 1);
  const Distribution p = s.distribution(std::vector<float>{0.1f, 2.0f, -1.0f, 2.0f});
  EXPECT_EQ(p, (Distribution{0, 1, 0, 0}));
}

TEST(Sampler, TemperatureScalesTheLogits) {
  Sampler s({.temperature = 2.0f});
  const std::vector<float> logits{1.0f, 3.0f, 0.0f};
  const Distribution p = s.distribution(logits);
  double z = 0;
  for (float l : logits) z += std::exp(l / 2.0);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(p[i], std::exp(logits[i] / 2.0) / z, 1e-7);
}

TEST(Sampler, TopPKeepsTheNucleusAndRenormalises) {
  // Probabilities 0.5, 0.05, 0.3, 0.15: at top-p 0.7 the nucleus is {0, 2} (0.5 < 0.7 <= 0.8).
  const std::vector<float> logits = log_probs({0.5, 0.05, 0.3, 0.15});
  Sampler s({.temperature = 1.0f, .top_p = 0.7f, .seed = 3});
  const Distribution p = s.distribution(logits);
  EXPECT_NEAR(p[0], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(p[2], 0.3 / 0.8, 1e-6);
  EXPECT_EQ(p[1], 0.0);
  EXPECT_EQ(p[3], 0.0);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 20000; ++i) ++counts[static_cast<size_t>(s.sample(logits))];
  EXPECT_EQ(counts[1] + counts[3], 0) << "a token outside the nucleus was drawn";
  EXPECT_NEAR(counts[0] / 20000.0, 0.625, 0.015);
  // A small top-p keeps the single most probable token; top-p 1 keeps every token.
  EXPECT_EQ(Sampler({.temperature = 1.0f, .top_p = 0.1f}).distribution(logits),
            (Distribution{1, 0, 0, 0}));
  const Distribution all = Sampler({.temperature = 1.0f}).distribution(logits);
  for (double x : all) EXPECT_GT(x, 0.0);
}

TEST(Sampler, DrawsFollowTheDistribution) {
  const std::vector<float> logits = log_probs({0.1, 0.2, 0.3, 0.4});
  Sampler s({.temperature = 1.0f, .seed = 11});
  std::vector<int> counts(4, 0);
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) ++counts[static_cast<size_t>(s.sample(logits))];
  for (size_t i = 0; i < 4; ++i)
    EXPECT_NEAR(counts[i] / static_cast<double>(kDraws), 0.1 * static_cast<double>(i + 1), 0.01);
}

TEST(Sampler, TheSeedReproducesTheDraws) {
  const std::vector<float> logits = log_probs({0.25, 0.25, 0.25, 0.25});
  auto draws = [&](uint64_t seed) {
    Sampler s({.temperature = 0.8f, .top_p = 0.9f, .seed = seed});
    std::vector<int32_t> out;
    out.reserve(64);
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits));
    return out;
  };
  EXPECT_EQ(draws(5), draws(5));
  EXPECT_NE(draws(5), draws(6));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({.temperature = -1.0f}), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_p = 0.0f}), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_p = 1.5f}), Error);
}

}  // namespace
}  // namespace moetron
