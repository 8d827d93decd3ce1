// The incremental decoder against the training forward pass: main-head logits against
// Model::logits, and MTP-module logits against the training MtpModule chain, with tokens fed
// one at a time, in chunks and all at once; KV-cache rollback; the decode attention op.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "core/ops.h"
#include "core/ops_decode.h"
#include "models/decoder.h"
#include "models/model.h"
#include "tests/generate/tiny_model.h"

namespace moetron {
namespace {

using test::init_tiny;
using test::random_tokens;
using test::relative_error;
using test::tiny_config;
using test::TinyCase;

constexpr int64_t kSeq = 24;

// Feeds `tokens` to the main model in chunks of the given sizes; all logits, row after row.
std::vector<float> main_logits(Decoder& dec, std::span<const int32_t> tokens,
                               const std::vector<int64_t>& chunks) {
  dec.reset();
  std::vector<float> out;
  size_t pos = 0;
  for (int64_t n : chunks) {
    const Tensor l = dec.forward(tokens.subspan(pos, static_cast<size_t>(n)));
    out.insert(out.end(), l.span<float>().begin(), l.span<float>().end());
    pos += static_cast<size_t>(n);
  }
  EXPECT_EQ(pos, tokens.size());
  return out;
}

std::vector<int64_t> ones(int64_t n) {
  return std::vector<int64_t>(static_cast<size_t>(n), 1);
}

class DecoderMatchesTraining : public ::testing::TestWithParam<TinyCase> {};
// The cases with MTP modules.
class DecoderMtpMatchesTraining : public ::testing::TestWithParam<TinyCase> {};

const std::vector<TinyCase> kCases = {
    {"RotateHalfSigmoidGroupsMoe", config::ModelConfig::ROTATE_HALF, true, false, false, 2},
    {"InterleavedSoftmaxMoeTied", config::ModelConfig::INTERLEAVED, true, true, true, 1},
    {"InterleavedDense", config::ModelConfig::INTERLEAVED, false, false, false, 2},
    {"RotateHalfDenseTiedNoMtp", config::ModelConfig::ROTATE_HALF, false, false, true, 0},
    // MLA decodes in the absorbed form over its latent cache; training runs the expanded form.
    {"MlaQLoraInterleavedMoe", config::ModelConfig::INTERLEAVED, true, false, false, 2, 1},
    {"MlaQProjYarnDense", config::ModelConfig::ROTATE_HALF, false, false, false, 1, 2},
    // Gated DeltaNet decodes with its recurrent form; training runs the chunked one. Truncation
    // restores the saved state and recomputes.
    {"HybridGatedAttentionMoe", config::ModelConfig::ROTATE_HALF, true, true, false, 2, 0, 1},
    {"GatedDeltaNetEverywhereDense", config::ModelConfig::ROTATE_HALF, false, false, true, 1, 0,
     2}};

std::vector<TinyCase> mtp_cases() {
  std::vector<TinyCase> out;
  for (const TinyCase& c : kCases)
    if (c.depth > 0) out.push_back(c);
  return out;
}

std::string case_name(const ::testing::TestParamInfo<TinyCase>& info) {
  return info.param.name;
}

TEST_P(DecoderMatchesTraining, MainLogitsOneAtATimeInChunksAndWhole) {
  const config::ModelConfig cfg = tiny_config(GetParam());
  Model model(cfg, 1, kSeq);
  init_tiny(model.params(), 11);
  const std::vector<int32_t> tokens = random_tokens(kSeq, cfg.vocab_size(), 5);
  const Tensor ref = model.logits(tokens);

  Decoder dec(model, kSeq);
  const std::vector<float> one = main_logits(dec, tokens, ones(kSeq));
  const std::vector<float> chunked = main_logits(dec, tokens, {5, 1, 7, 11});
  const std::vector<float> whole = main_logits(dec, tokens, {kSeq});
  ASSERT_EQ(one.size(), static_cast<size_t>(ref.numel()));
  EXPECT_LT(relative_error(one, ref.span<float>()), 1e-5);
  EXPECT_LT(relative_error(whole, ref.span<float>()), 1e-5);
  // A position gets the same bits whatever chunk it came in: speculative verification (a
  // chunk) and plain decoding (one at a time) see the same logits.
  EXPECT_EQ(one, chunked);
  EXPECT_EQ(one, whole);
}

// A prompt longer than kFixedOrderRows takes the GEMM path: the same logits to fp32 rounding.
TEST(Decoder, LongChunksAgreeWithTheFixedOrderPath) {
  const TinyCase c{"Long", config::ModelConfig::INTERLEAVED, true, false, false, 1};
  const config::ModelConfig cfg = tiny_config(c);
  constexpr int64_t T = kFixedOrderRows + 16;
  Model model(cfg, 1, T);
  init_tiny(model.params(), 4);
  const std::vector<int32_t> tokens = random_tokens(T, cfg.vocab_size(), 8);
  const Tensor ref = model.logits(tokens);
  Decoder dec(model, T);
  const std::vector<float> whole = main_logits(dec, tokens, {T});
  const std::vector<float> steps = main_logits(dec, tokens, {T - 16, 16});
  EXPECT_LT(relative_error(whole, ref.span<float>()), 1e-5);
  EXPECT_LT(relative_error(steps, ref.span<float>()), 1e-5);
}

// The MTP chain over a whole window the way training runs it (the training path of the
// model's own layers). window: kSeq + D tokens. Main logits, then each module's logits,
// [kSeq, vocab] each.
std::vector<Tensor> training_chain_logits(Model& model, std::span<const int32_t> window) {
  const ModelDims& d = model.dims();
  const Shape act{kSeq, d.hidden};
  Tensor x = Tensor::empty(act), y = Tensor::empty(act), h0 = Tensor::empty(act);
  model.embedding().forward(ops::from_host(window.first(kSeq)), x);
  for (int64_t l = 0; l < d.layers; ++l) {
    model.block(l).forward(x, y);
    std::swap(x, y);
  }
  model.final_norm().forward(x, h0);
  std::vector<Tensor> out;
  auto project = [&](const Tensor& h) {
    Tensor l = Tensor::empty({kSeq, d.vocab});
    ops::matmul(h, false, model.head_weight().value(), true, l);
    out.push_back(l);
  };
  project(h0);
  std::vector<Tensor> emb;
  for (int64_t k = 1; k <= d.mtp_depth; ++k) {
    emb.push_back(Tensor::empty(act));
    model.embedding().forward(ops::from_host(window.subspan(static_cast<size_t>(k), kSeq)),
                              emb.back());
    model.mtp(k).forward(emb.back(), k == 1 ? h0 : model.mtp(k - 1).output());
    project(model.mtp(k).output());  // h_k: the head's input
  }
  return out;
}

TEST_P(DecoderMtpMatchesTraining, MtpLogitsAsTheTrainingChain) {
  const config::ModelConfig cfg = tiny_config(GetParam());
  Model model(cfg, 1, kSeq);
  init_tiny(model.params(), 11);
  const int64_t depth = model.dims().mtp_depth, vocab = cfg.vocab_size();
  const std::vector<int32_t> window = random_tokens(kSeq + depth, cfg.vocab_size(), 6);
  const std::vector<Tensor> expected = training_chain_logits(model, window);
  // The chain's main logits are Model::logits'.
  EXPECT_EQ(relative_error(expected[0].span<float>(),
                           model.logits(std::span(window).first(kSeq)).span<float>()),
            0.0);

  // Positions fed as speculative decoding feeds them: a chunk to the main model, then the same
  // positions to module 1, then to module 2 (t[i + k] for module k).
  for (const std::vector<int64_t>& chunks : {ones(kSeq), std::vector<int64_t>{7, 1, 16}}) {
    Decoder dec(model, kSeq);
    std::vector<std::vector<float>> got(static_cast<size_t>(depth + 1));
    int64_t pos = 0;
    for (int64_t n : chunks) {
      for (int64_t k = 0; k <= depth; ++k) {
        const auto in =
            std::span(window).subspan(static_cast<size_t>(pos + k), static_cast<size_t>(n));
        const Tensor l = k == 0 ? dec.forward(in) : dec.mtp_forward(k, in);
        got[static_cast<size_t>(k)].insert(got[static_cast<size_t>(k)].end(),
                                           l.span<float>().begin(), l.span<float>().end());
      }
      pos += n;
    }
    for (int64_t k = 0; k <= depth; ++k) {
      ASSERT_EQ(got[static_cast<size_t>(k)].size(), static_cast<size_t>(kSeq * vocab));
      EXPECT_LT(relative_error(got[static_cast<size_t>(k)],
                               expected[static_cast<size_t>(k)].span<float>()),
                1e-5)
          << "depth " << k << ", " << chunks.size() << " chunks";
    }
  }
}

TEST_P(DecoderMatchesTraining, TruncatedPositionsAreForgotten) {
  const config::ModelConfig cfg = tiny_config(GetParam());
  Model model(cfg, 1, kSeq);
  init_tiny(model.params(), 11);
  const std::vector<int32_t> a = random_tokens(16, cfg.vocab_size(), 7);
  std::vector<int32_t> b = a;
  for (size_t i = 10; i < b.size(); ++i) b[i] = (b[i] + 1) % cfg.vocab_size();
  Decoder dec(model, kSeq);
  const std::vector<float> fresh = main_logits(dec, b, {10, 6});
  main_logits(dec, a, {10, 6});
  dec.truncate(10);  // roll back a's last 6 tokens, then feed b's
  const Tensor l = dec.forward(std::span(b).subspan(10));
  const auto tail = std::span(fresh).subspan(10 * static_cast<size_t>(cfg.vocab_size()));
  EXPECT_EQ(std::vector<float>(l.span<float>().begin(), l.span<float>().end()),
            std::vector<float>(tail.begin(), tail.end()));
}

// No capacity at inference: a model trained with a capacity factor decodes dropless, the same
// bits as the model without one, while its training forward drops assignments.
TEST(Decoder, DecodesDroplessWhateverTheTrainingCapacity) {
  const TinyCase c{"Capacity", config::ModelConfig::ROTATE_HALF, true, false, false, 1};
  config::ModelConfig capped = tiny_config(c);
  capped.mutable_moe()->set_capacity_factor(0.5f);
  const config::ModelConfig dropless = tiny_config(c);
  Model a(capped, 1, kSeq), b(dropless, 1, kSeq);
  init_tiny(a.params(), 11);
  init_tiny(b.params(), 11);
  const std::vector<int32_t> tokens = random_tokens(kSeq, capped.vocab_size(), 5);
  EXPECT_GT(relative_error(a.logits(tokens).span<float>(), b.logits(tokens).span<float>()), 1e-3);
  Decoder da(a, kSeq), db(b, kSeq);
  for (const std::vector<int64_t>& chunks : {ones(kSeq), std::vector<int64_t>{kSeq}})
    EXPECT_EQ(main_logits(da, tokens, chunks), main_logits(db, tokens, chunks));
  EXPECT_LT(relative_error(main_logits(db, tokens, {kSeq}), b.logits(tokens).span<float>()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Decoder, DecoderMatchesTraining, ::testing::ValuesIn(kCases), case_name);
INSTANTIATE_TEST_SUITE_P(Decoder, DecoderMtpMatchesTraining, ::testing::ValuesIn(mtp_cases()),
                         case_name);

TEST(AttentionDecode, MatchesCausalAttentionAtEveryPosition) {
  constexpr int64_t T = 37, H = 6, KV = 2, hd = 16;
  std::mt19937 gen(3);
  std::normal_distribution<float> normal;
  auto random = [&](Shape s) {
    Tensor t = Tensor::empty(std::move(s));
    for (float& x : t.span<float>()) x = normal(gen);
    return t;
  };
  const Tensor q = random({1, T, H, hd}), k = random({1, T, KV, hd}), v = random({1, T, KV, hd});
  Tensor out = Tensor::empty({1, T, H, hd}), lse = Tensor::empty({1, H, T});
  ops::attention_forward(q, k, v, 0.25f, out, lse);
  const Tensor values = v.reshape({T, KV, hd}), q_rows = q.reshape({T, H, hd});
  for (const int64_t chunk : {int64_t{1}, int64_t{5}, T}) {
    Tensor keys_t = Tensor::empty({KV, hd, T}), got = Tensor::empty({T, H, hd});
    for (int64_t start = 0; start < T; start += chunk) {
      const int64_t end = std::min(T, start + chunk);
      ops::store_keys(k.reshape({T, KV, hd}).slice(start, end), start, keys_t);
      Tensor rows = got.slice(start, end);
      ops::attention_decode(q_rows.slice(start, end), keys_t, values, start, rows);
    }
    EXPECT_LT(relative_error(got.span<float>(), out.span<float>()), 1e-5) << "chunk " << chunk;
  }
}

}  // namespace
}  // namespace moetron
