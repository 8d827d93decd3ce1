// Muon (trainer/muon.h) against the fp32 reference of Moonlight's step (tests/reference/muon.py):
// Newton-Schulz on its own, two steps with momentum (Nesterov, 5 iterations; plain, 3), and the
// parameter groups of optimizer.kind MUON.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/ops.h"
#include "models/attention.h"
#include "models/mla.h"
#include "models/model.h"
#include "tests/golden.h"
#include "tests/models/layer_check.h"
#include "trainer/optimizer.h"

namespace moetron {
namespace {

using test::all_close;
using test::Golden;
using test::golden_path;

const std::vector<std::pair<std::string, Shape>> kMatrices = {
    {"model.layers.0.mlp.gate_proj.weight", {48, 32}},
    {"model.layers.0.self_attn.o_proj.weight", {32, 48}},
    {"model.layers.0.self_attn.kv_b_proj.weight", {24, 24}},
    {"model.layers.1.mlp.experts.3.down_proj.weight", {32, 16}}};

config::OptimizerConfig muon_config(const Golden& g) {
  config::OptimizerConfig c;
  c.set_kind(config::OptimizerConfig::MUON);
  c.set_grad_clip(0.0f);  // the reference does not clip
  config::MuonConfig* m = c.mutable_muon();
  m->set_momentum(static_cast<float>(g.attr_num("momentum")));
  m->set_nesterov(g.attr_num("nesterov") != 0);
  m->set_ns_steps(static_cast<int>(g.attr_num("ns_steps")));
  m->set_weight_decay(static_cast<float>(g.attr_num("weight_decay")));
  m->set_rms_scale(static_cast<float>(g.attr_num("rms_scale")));
  return c;
}

TEST(Muon, NewtonSchulzMatchesTheReference) {
  const Golden g(golden_path("muon_step.h5"));
  for (const auto& [name, shape] : kMatrices) {
    Tensor u = test::tensor_from(g, "/outputs/step0_u/" + name, shape);
    NewtonSchulzScratch scratch;
    newton_schulz(u, static_cast<int>(g.attr_num("ns_steps")), scratch);
    EXPECT_TRUE(all_close(u.span<float>(), g.floats("/outputs/step0_ortho/" + name), 1e-5f, 1e-5f))
        << name;
  }
}

class MuonGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(MuonGolden, TwoStepsMatchTheReference) {
  const Golden g(golden_path(GetParam()));
  ParamTable params;
  for (const auto& [name, shape] : kMatrices) params.add(name, shape, ParamKind::matrix);
  params.allocate();
  test::load_params(params, g, "/params");
  Muon muon(params, muon_config(g), is_hidden_matrix, {});
  const double lr = g.attr_num("lr");
  for (int step = 0; step < 2; ++step) {
    for (const auto& [name, shape] : kMatrices) {
      const std::vector<float> grad = g.floats("/grads/step" + std::to_string(step) + "/" + name);
      std::copy(grad.begin(), grad.end(), params.grad(params.find(name)).span<float>().begin());
    }
    muon.step(lr, 0.0);
    if (step == 0) {
      for (const auto& [name, shape] : kMatrices)
        EXPECT_TRUE(all_close(params.value(params.find(name)).span<float>(),
                              g.floats("/outputs/step0_params/" + name), 1e-5f, 1e-6f))
            << name << " after step 1";
    }
  }
  const checkpoint::StateSlot slot = muon.slot();
  for (const auto& [name, shape] : kMatrices) {
    const int id = params.find(name);
    EXPECT_TRUE(all_close(params.value(id).span<float>(), g.floats("/outputs/params/" + name),
                          1e-5f, 1e-6f))
        << name;
    // The momentum of each matrix lies at its offset among the slot's ranges (here: everything).
    const Tensor m = slot.values.view(params.info(id).offset, {params.info(id).numel()});
    EXPECT_TRUE(all_close(m.span<float>(), g.floats("/outputs/momentum/" + name), 1e-5f, 1e-7f))
        << name << " momentum";
  }
}

INSTANTIATE_TEST_SUITE_P(Muon, MuonGolden, ::testing::Values("muon_step.h5", "muon_step_plain.h5"));

// optimizer.kind MUON: Muon for every hidden matrix (experts and the router included), AdamW
// for the norms, the embedding and the head; every trained parameter in exactly one group.
TEST(Muon, ParameterGroupsOfAModel) {
  config::RunConfig cfg = parse_config_text(R"(
    model { vocab_size: 64 hidden_size: 32 num_hidden_layers: 2 num_attention_heads: 4
            intermediate_size: 48 num_nextn_predict_layers: 1
            moe { n_routed_experts: 4 num_experts_per_tok: 2 moe_intermediate_size: 16
                  first_k_dense_replace: 1 } }
    optimizer { kind: MUON }
  )",
                                            "muon");
  Model model(cfg.model(), 1, 8);
  const Optimizer opt(model.params(), cfg.optimizer(), {});
  const checkpoint::OptimizerState state = opt.state();
  ASSERT_EQ(state.slots.size(), 3u);  // exp_avg, exp_avg_sq, muon_momentum
  int muon = 0, adam = 0;
  for (const ParamInfo& p : model.params().infos()) {
    if (p.kind == ParamKind::buffer) continue;
    const bool in_muon = state.slots[2].holds(p.name, p.kind);
    const bool in_adam = state.slots[0].holds(p.name, p.kind);
    EXPECT_NE(in_muon, in_adam) << p.name;
    (in_muon ? muon : adam) += 1;
    if (p.name.find("experts.") != std::string::npos || p.name.ends_with("mlp.gate.weight")) {
      EXPECT_TRUE(in_muon) << p.name;
    }
    if (p.name == "model.embed_tokens.weight" || p.name == "lm_head.weight" ||
        p.name.ends_with("norm.weight")) {
      EXPECT_TRUE(in_adam) << p.name;
    }
  }
  EXPECT_GT(muon, 0);
  EXPECT_GT(adam, 0);
  // The slots' ranges cover exactly their parameters' elements.
  int64_t muon_elements = 0;
  for (const auto& [b, e] : state.slots[2].ranges) muon_elements += e - b;
  int64_t expected = 0;
  for (const ParamInfo& p : model.params().infos())
    if (p.kind != ParamKind::buffer && is_hidden_matrix(p.name, p.kind)) expected += p.numel();
  EXPECT_EQ(muon_elements, expected);
}

// QK-clip's invariant (Kimi K2): on the batch that measured them, the largest logit of every
// head above tau becomes tau, and the other heads keep theirs bitwise; only the clipped heads'
// query/key rows change (MLA: never the shared RoPE key or the values).
class QkClip : public ::testing::TestWithParam<int> {};  // 0 GQA; 1 MLA with a q LoRA; 2 q_proj

TEST_P(QkClip, ClippedHeadsReachTauOnTheMeasuringBatch) {
  ModelDims d;
  d.batch = 2;
  d.seq = 17;
  d.hidden = 32;
  d.heads = 4;
  d.kv_heads = GetParam() == 0 ? 2 : 4;
  d.head_dim = 8;
  d.mla = {GetParam() == 1 ? 24 : 0, 16, 8, 4, 12};
  d.rope_dim = GetParam() == 0 ? 8 : 4;
  const RopeTables rope = RopeTables::make(d, d.seq);
  ParamTable params;
  std::unique_ptr<TokenMixer> mixer =
      make_mixer(GetParam() == 0 ? MixerKind::attention : MixerKind::mla, params, "", d, rope, {});
  params.allocate();
  params.init(3, 0.6f);  // large weights: logits of a few units to tens
  Tensor x = Tensor::empty({d.rows(), d.hidden}), y = Tensor::empty({d.rows(), d.hidden});
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  for (float& v : x.span<float>()) v = normal(gen);
  mixer->reset_max_logits();
  mixer->forward(x, y);
  const std::vector<float> before = ops::to_host<float>(mixer->max_logits());
  std::vector<float> sorted = before;
  std::sort(sorted.begin(), sorted.end());
  const float tau = 0.5f * (sorted[1] + sorted[2]);  // two heads above, two below
  std::vector<float> gamma(before.size(), 1.0f);
  for (size_t h = 0; h < before.size(); ++h)
    if (before[h] > tau) gamma[h] = tau / before[h];
  const std::vector<float> weights_before(params.flat_values().span<float>().begin(),
                                          params.flat_values().span<float>().end());
  mixer->qk_clip(gamma);
  mixer->reset_max_logits();
  mixer->forward(x, y);
  const std::vector<float> after = ops::to_host<float>(mixer->max_logits());
  for (size_t h = 0; h < before.size(); ++h) {
    if (before[h] > tau) {
      EXPECT_NEAR(after[h], tau, 2e-5 * tau) << "head " << h << " measured " << before[h];
    } else {
      EXPECT_EQ(after[h], before[h]) << "head " << h;
    }
  }
  // Which weights moved: only the rows of the clipped heads, in the query and key projections.
  for (const ParamInfo& p : params.infos()) {
    const auto now = params.value(params.find(p.name)).span<float>();
    const int64_t cols = p.shape.size() == 2 ? p.shape[1] : 1;
    for (int64_t i = 0; i < p.numel(); ++i) {
      if (now[static_cast<size_t>(i)] == weights_before[static_cast<size_t>(p.offset + i)])
        continue;
      const int64_t row = i / cols;
      int64_t head = -1;
      if (p.name == "q_proj.weight" || p.name == "q_b_proj.weight")
        head = row / (GetParam() == 0 ? d.head_dim : d.mla.qk());
      else if (p.name == "kv_b_proj.weight" && row % (d.mla.nope + d.mla.v) < d.mla.nope)
        head = row / (d.mla.nope + d.mla.v);
      ASSERT_GE(head, 0) << p.name << " row " << row << " changed";
      EXPECT_LT(gamma[static_cast<size_t>(head)], 1.0f) << p.name << " row " << row;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Muon, QkClip, ::testing::Values(0, 1, 2));

}  // namespace
}  // namespace moetron
