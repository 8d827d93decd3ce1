// Generation: greedy speculative decoding with the MTP modules gives plain greedy decoding's
// tokens exactly; a model that has learned a pattern accepts nearly every draft; seeded
// sampling is reproducible; speculative sampling draws from plain sampling's distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "models/generate.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/generate/tiny_model.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using test::init_tiny;
using test::random_tokens;
using test::tiny_config;
using test::TinyCase;

struct Generated {
  GenerateResult plain, speculative;
};

Generated both_ways(Model& model, std::span<const int32_t> prompt, const GenerateOptions& o) {
  Decoder dec(model, generation_max_len(static_cast<int64_t>(prompt.size()), o.max_tokens,
                                        model.dims().mtp_depth));
  Generated g{generate(dec, prompt, o), generate_speculative(dec, prompt, o)};
  EXPECT_EQ(g.plain.tokens.size(), static_cast<size_t>(o.max_tokens));
  EXPECT_EQ(g.speculative.tokens.size(), static_cast<size_t>(o.max_tokens));
  return g;
}

class GreedySpeculative : public ::testing::TestWithParam<TinyCase> {};

TEST_P(GreedySpeculative, GivesThePlainTokens) {
  const config::ModelConfig cfg = tiny_config(GetParam(), 16);
  Model model(cfg, 1, 8);
  init_tiny(model.params(), 21, 0.3f);
  for (const int64_t prompt_len : {1, 6}) {
    const std::vector<int32_t> prompt = random_tokens(prompt_len, cfg.vocab_size(), 9);
    const Generated g = both_ways(model, prompt, {.max_tokens = 50, .sampling = {}});
    EXPECT_EQ(g.speculative.tokens, g.plain.tokens) << "prompt of " << prompt_len;
    EXPECT_GT(g.speculative.total_drafted(), 0);
    EXPECT_EQ(g.plain.main_forwards, 50);
    EXPECT_EQ(g.speculative.main_forwards + g.speculative.total_accepted(), 50);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Generate, GreedySpeculative,
    ::testing::Values(
        TinyCase{"MoeD2", config::ModelConfig::ROTATE_HALF, true, false, false, 2},
        TinyCase{"MoeSoftmaxD1", config::ModelConfig::INTERLEAVED, true, true, true, 1},
        TinyCase{"DenseD3", config::ModelConfig::ROTATE_HALF, false, false, false, 3},
        TinyCase{"MlaMoeD2", config::ModelConfig::INTERLEAVED, true, false, false, 2, 1},
        // Rejected drafts roll a recurrent state back by recomputation (models/decoder.h).
        TinyCase{"HybridMoeD2", config::ModelConfig::ROTATE_HALF, true, true, false, 2, 0, 1},
        TinyCase{"GatedDeltaNetD2", config::ModelConfig::ROTATE_HALF, false, false, false, 2, 0,
                 2}),
    [](const ::testing::TestParamInfo<TinyCase>& info) { return std::string(info.param.name); });

TEST(Generate, SpeculativeNeedsMtpModules) {
  const config::ModelConfig cfg =
      tiny_config({"NoMtp", config::ModelConfig::ROTATE_HALF, true, false, false, 0});
  Model model(cfg, 1, 4);
  init_tiny(model.params(), 1);
  Decoder dec(model, 16);
  const std::vector<int32_t> prompt{1, 2};
  EXPECT_THROW(generate_speculative(dec, prompt, {.max_tokens = 4, .sampling = {}}), Error);
}

// A model trained on one repeating sequence predicts it two and three tokens ahead too: its
// MTP drafts are accepted nearly always, and verification saves main-model passes.
TEST(Generate, LearnedPatternAcceptsNearlyEveryDraft) {
  const config::ModelConfig cfg =
      tiny_config({"Pattern", config::ModelConfig::ROTATE_HALF, true, false, false, 2}, 16);
  constexpr int64_t kBatch = 4, kSeq = 32;
  Model model(cfg, kBatch, kSeq);
  init_tiny(model.params(), 5, 0.1f);
  std::vector<int32_t> cycle = random_tokens(11, cfg.vocab_size(), 12);
  config::OptimizerConfig opt;
  opt.set_lr(1e-2f);
  opt.set_weight_decay(0.0f);
  const ProcessGroups alone;
  TrainStep train(model, opt, alone, 1);
  std::mt19937 gen(4);
  const int64_t window = model.dims().window();
  for (int step = 0; step < 150; ++step)
    train.run(step, 1e-2, 1.0f, [&](std::span<int32_t> out) {
      for (int64_t b = 0; b < kBatch; ++b) {
        const auto offset = static_cast<size_t>(gen() % cycle.size());
        for (int64_t t = 0; t < window; ++t)
          out[static_cast<size_t>(b * window + t)] =
              cycle[(offset + static_cast<size_t>(t)) % cycle.size()];
      }
    });
  const std::vector<int32_t> prompt(cycle.begin() + 3, cycle.begin() + 8);
  const Generated g = both_ways(model, prompt, {.max_tokens = 24, .sampling = {}});
  EXPECT_EQ(g.speculative.tokens, g.plain.tokens);
  for (size_t i = 0; i < g.plain.tokens.size(); ++i)
    EXPECT_EQ(g.plain.tokens[i], cycle[(8 + i) % cycle.size()]) << "token " << i;
  const double rate = static_cast<double>(g.speculative.total_accepted()) /
                      static_cast<double>(g.speculative.total_drafted());
  EXPECT_GT(rate, 0.9);
  EXPECT_LT(g.speculative.main_forwards, 12);
}

TEST(Generate, SamplingIsReproducibleFromTheSeed) {
  const config::ModelConfig cfg =
      tiny_config({"Sample", config::ModelConfig::INTERLEAVED, true, false, false, 2}, 16);
  Model model(cfg, 1, 8);
  init_tiny(model.params(), 8, 0.3f);
  const std::vector<int32_t> prompt = random_tokens(4, cfg.vocab_size(), 2);
  auto run = [&](uint64_t seed) {
    return both_ways(
        model, prompt,
        {.max_tokens = 40, .sampling = {.temperature = 0.9f, .top_p = 0.95f, .seed = seed}});
  };
  const Generated a = run(17), b = run(17), c = run(18);
  EXPECT_EQ(a.plain.tokens, b.plain.tokens);
  EXPECT_EQ(a.speculative.tokens, b.speculative.tokens);
  EXPECT_NE(a.plain.tokens, c.plain.tokens);
  EXPECT_NE(a.speculative.tokens, c.speculative.tokens);
}

// Speculative sampling (accept a draft d ~ q with probability min(1, p(d)/q(d)), else draw from
// norm(max(0, p - q))) draws every position from the main model's distribution: the
// frequencies of the drafted positions match plain sampling's.
TEST(Generate, SpeculativeSamplingFollowsThePlainDistribution) {
  const config::ModelConfig cfg =
      tiny_config({"Dist", config::ModelConfig::ROTATE_HALF, true, false, false, 2}, 5);
  Model model(cfg, 1, 8);
  init_tiny(model.params(), 3, 0.8f);
  const std::vector<int32_t> prompt{1, 3, 0};
  constexpr int kRuns = 3000, kTokens = 3;
  Decoder dec(model, generation_max_len(3, kTokens, 2));
  std::vector<double> plain(kTokens * 5, 0.0), spec(kTokens * 5, 0.0);
  for (int seed = 0; seed < kRuns; ++seed) {
    const GenerateOptions o{.max_tokens = kTokens,
                            .sampling = {.temperature = 1.0f, .seed = static_cast<uint64_t>(seed)}};
    const std::vector<int32_t> a = generate(dec, prompt, o).tokens;
    const std::vector<int32_t> b = generate_speculative(dec, prompt, o).tokens;
    for (size_t i = 0; i < kTokens; ++i) {
      plain[i * 5 + static_cast<size_t>(a[i])] += 1.0 / kRuns;
      spec[i * 5 + static_cast<size_t>(b[i])] += 1.0 / kRuns;
    }
  }
  for (size_t i = 0; i < kTokens; ++i) {
    double tv = 0.0;
    for (size_t v = 0; v < 5; ++v) tv += 0.5 * std::abs(plain[i * 5 + v] - spec[i * 5 + v]);
    EXPECT_LT(tv, 0.025) << "position " << i;  // measured 0.007 and 0.010
  }
}

}  // namespace
}  // namespace moetron
