// The MoE FFN against the PyTorch goldens (routing, gates, capacity, balance losses, output,
// gradients, bias update), including the edge cases, plus finite differences and the
// whole MoE model over three AdamW steps with aux-loss-free bias updates.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "models/model.h"
#include "models/moe.h"
#include "parallel/process_groups.h"
#include "tests/models/bf16_bounds.h"
#include "tests/models/golden_config.h"
#include "tests/models/layer_check.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using test::all_close;
using test::Golden;
using test::golden_path;
using test::model_config;
using test::moe_dims;
using test::optimizer_config;

std::vector<float> as_floats(std::span<const int32_t> v) {
  return {v.begin(), v.end()};
}

class MoeGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(MoeGolden, MatchesReference) {
  const Golden g(golden_path(GetParam()));
  ModelDims d;
  d.batch = static_cast<int64_t>(g.attr_num("batch"));
  d.seq = static_cast<int64_t>(g.attr_num("seq_len"));
  d.hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  d.moe = moe_dims(g);
  ParamTable params;
  MoE moe(params, "", d, {});
  params.allocate();
  test::load_params(params, g, "/params");
  Tensor x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  const Tensor dy = test::tensor_from(g, "/inputs/dy", {d.rows(), d.hidden});
  Tensor y = Tensor::empty({d.rows(), d.hidden}), dx = Tensor::empty({d.rows(), d.hidden});
  moe.set_balance_sums(Tensor::zeros({ops::kBalanceSums}, DType::f64));
  moe.forward(x, y);

  // Routing: chosen experts in order, gates, kept slots, counts, dropped.
  EXPECT_EQ(as_floats(moe.topk_idx().span<int32_t>()), as_floats(g.ints("/outputs/topk_idx")));
  EXPECT_TRUE(all_close(moe.gates().span<float>(), g.floats("/outputs/gates"), 1e-5f, 1e-6f));
  std::vector<float> kept;
  for (int32_t row : ops::to_host<int32_t>(moe.plan().slot_row))
    kept.push_back(row >= 0 ? 1.0f : 0.0f);
  EXPECT_EQ(kept, as_floats(g.ints("/outputs/kept")));
  std::vector<float> counts(moe.stats().counts.begin(), moe.stats().counts.end());
  EXPECT_EQ(counts, as_floats(g.ints("/outputs/counts")));
  EXPECT_EQ(moe.stats().dropped, g.ints("/outputs/dropped")[0]);
  // Balance losses and entropy, as the forward added them to its sums.
  const std::vector<double> l = ops::to_host<double>(moe.balance_sums());
  const double seq_aux = l[ops::kSeqAux], aux = l[ops::kAux], z = l[ops::kZ];
  EXPECT_NEAR(seq_aux, g.floats("/outputs/seq_aux_loss")[0], 1e-6 + 1e-5 * std::abs(seq_aux));
  EXPECT_NEAR(aux, g.floats("/outputs/aux_loss")[0], 1e-6 + 1e-5 * std::abs(aux));
  EXPECT_NEAR(z, g.floats("/outputs/z_loss")[0], 1e-7 + 1e-5 * std::abs(z));
  EXPECT_NEAR(l[ops::kEntropy], g.floats("/outputs/entropy")[0], 1e-5);
  // Output and gradients (of sum(y * dy) + the balance losses).
  EXPECT_TRUE(all_close(y.span<float>(), g.floats("/outputs/y"), 1e-4f, 1e-5f)) << "forward";
  moe.backward(dy, x, dx);
  EXPECT_TRUE(all_close(dx.span<float>(), g.floats("/grads/x"), 1e-4f, 1e-5f)) << "input grad";
  test::expect_param_grads(params, g, "/grads/params", 1e-4f, 1e-5f);
  // The aux-loss-free bias update from this batch's counts.
  moe.update_bias(moe.stats().counts, d.moe.bias_update_speed);
  EXPECT_TRUE(
      all_close(moe.bias().value().span<float>(), g.floats("/outputs/bias_after"), 0, 1e-7f));
}

INSTANTIATE_TEST_SUITE_P(Moe, MoeGolden,
                         ::testing::Values("moe_sigmoid_grouped.h5", "moe_softmax.h5",
                                           "moe_unused_expert.h5", "moe_one_expert.h5",
                                           "moe_k_equals_e.h5", "moe_ties.h5", "moe_capacity.h5",
                                           // Qwen's: softmax, renormalised, gated shared expert
                                           "moe_qwen_shared_gate.h5"));

TEST(Moe, FiniteDifferencesOfExpertsRouterAndInput) {
  const Golden g(golden_path("moe_sigmoid_grouped.h5"));
  ModelDims d;
  d.batch = 2;
  d.seq = 12;
  d.hidden = 16;
  d.moe = moe_dims(g);
  ParamTable params;
  MoE moe(params, "", d, {});
  params.allocate();
  test::load_params(params, g, "/params");
  Tensor x = test::tensor_from(g, "/inputs/x", {24, 16});
  const Tensor dy = test::tensor_from(g, "/inputs/dy", {24, 16});
  Tensor y = Tensor::empty({24, 16}), dx = Tensor::empty({24, 16});
  // The objective sum(y * dy) alone: no balance losses in the gradient for this check.
  moe.set_aux_grad_scale(0.0f);
  moe.forward(x, y);
  moe.backward(dy, x, dx);
  auto fwd = [&] {
    moe.forward(x, y);
    return y;
  };
  // Small steps: routing is piecewise constant, and these steps change no selection.
  test::expect_finite_differences("x", x, dx, fwd, dy, 16, 2e-2, 2e-3);
  for (const char* name : {"gate.weight", "experts.3.up_proj.weight", "experts.5.down_proj.weight",
                           "shared_experts.gate_proj.weight"}) {
    const int id = params.find(name);
    test::expect_finite_differences(name, params.value(id), params.grad(id), fwd, dy, 16, 2e-2,
                                    2e-3);
  }
}

TEST(Moe, BiasUpdateMovesAnImbalancedRouterTowardsBalance) {
  // A router that sends most tokens to one expert; the aux-loss-free rule alone, applied
  // step after step on the same batch, must spread the load.
  ModelDims d;
  d.batch = 4;
  d.seq = 32;
  d.hidden = 16;
  d.moe.experts = 8;
  d.moe.k = 2;
  d.moe.intermediate = 8;
  ParamTable params;
  MoE moe(params, "", d, {});
  params.allocate();
  params.init(5, 0.3f);
  Tensor gate = params.value(params.find("gate.weight"));
  Tensor x = Tensor::empty({d.rows(), 16}), y = Tensor::empty({d.rows(), 16});
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.5f, 1.0f);  // a shared direction all tokens lean to
  for (float& v : x.span<float>()) v = normal(gen);
  for (int64_t c = 0; c < 16; ++c) gate.span<float>()[2 * 16 + c] += 0.4f;  // expert 2 favoured
  auto max_violation = [&] {
    moe.forward(x, y);
    const auto& c = moe.stats().counts;
    double mean = 0, mx = 0;
    for (int64_t v : c) mean += v / 8.0, mx = std::max(mx, double(v));
    return (mx - mean) / mean;
  };
  const double before = max_violation();
  for (int step = 0; step < 300; ++step) {
    max_violation();
    moe.update_bias(moe.stats().counts, 0.01f);
  }
  const double after = max_violation();
  EXPECT_GT(before, 1.5);
  EXPECT_LT(after, 0.5) << "before " << before;
}

// Each MoE layer's expert loads of `step` against the golden's /counts.
void expect_counts(const Golden& g, const std::vector<MoeStepStats>& moe, int step) {
  for (const MoeStepStats& m : moe) {
    const std::string layer = m.name.substr(0, m.name.find(".mlp"));
    const std::vector<int32_t> want = g.ints("/counts/" + layer);
    std::vector<int32_t> got(m.counts.begin(), m.counts.end());
    EXPECT_EQ(got, std::vector<int32_t>(want.begin() + step * got.size(),
                                        want.begin() + (step + 1) * got.size()))
        << layer << " step " << step;
  }
}

TEST(MoeModel, ThreeAdamWStepsWithBiasUpdatesMatchReference) {
  const Golden g(golden_path("model_moe.h5"));
  const auto batch = static_cast<int64_t>(g.attr_num("batch"));
  const auto seq = static_cast<int64_t>(g.attr_num("seq_len"));
  const auto lambda = static_cast<float>(g.attr_num("mtp_loss_weight"));
  Model model(model_config(g), batch, seq);
  test::load_params(model.params(), g, "/params");
  const ProcessGroups alone;
  TrainStep train(model, optimizer_config(g), alone, 1);

  const std::vector<int32_t> tokens = g.ints("/tokens");
  const size_t per_step = static_cast<size_t>(batch * model.dims().window());
  const std::vector<float> total = g.floats("/losses/total"), aux = g.floats("/losses/aux"),
                           norms = g.floats("/grad_norm");
  for (int step = 0; step < 3; ++step) {
    const StepResult r =
        train.run(step, g.attr_num("lr"), lambda, test::feed(tokens, step * per_step),
                  [&](const StepResult&) {
                    if (step == 0)
                      test::expect_param_grads(model.params(), g, "/grads0", 1e-4f, 1e-6f);
                  });
    const Losses& l = r.losses;
    EXPECT_NEAR(l.total, total[step], 2e-5 * total[step]) << "step " << step;
    EXPECT_NEAR(l.aux, aux[step], 1e-6 + 1e-4 * aux[step]) << "step " << step;
    expect_counts(g, r.moe, step);
    EXPECT_NEAR(r.grad_norm, norms[step], 1e-4 * norms[step]) << "step " << step;
  }
  const test::AdamCheck adam = test::golden_adam_check(g, 3);
  for (const ParamInfo& p : model.params().infos()) {
    const Tensor v = model.params().value(model.params().find(p.name));
    if (p.kind == ParamKind::buffer) {
      const std::vector<float> hist =
          g.floats("/bias/" + p.name);  // [4, E]: before each step, after
      EXPECT_TRUE(all_close(v.span<float>(),
                            std::span<const float>(hist).subspan(3 * v.numel(), v.numel()), 0,
                            1e-6f))
          << "bias " << p.name;
      continue;
    }
    adam.expect_close(v.span<float>(), g.floats("/params_final/" + p.name), p.name,
                      g.attr_num("lr"));
  }
}

// bf16 precision against the reference's emulation (as Model.Bf16ThreeAdamWSteps..., the bounds
// of tests/models/bf16_bounds.h). Routing is fp32, but its inputs carry the bf16 rounding: step 0
// routes as the reference does (counts exact, loss within 1e-5, gradients within 1e-2 of each
// tensor's largest). After AdamW's first update near-ties in layer 2 flip under the plan's
// noise: seen at step 1 here (two tokens of layer 2, loss 1.5e-3 apart) and at step 2 in the
// reference's own fp64 rerun, so steps 1 and 2 are held to a loss within 1e-2 and the final
// weights are not compared.
TEST(MoeModel, Bf16StepsMatchTheReferencesEmulationWhileRoutingAgrees) {
  const Golden g(golden_path("model_moe_bf16.h5"));
  ASSERT_EQ(g.attr_str("precision"), "bf16");
  const auto lambda = static_cast<float>(g.attr_num("mtp_loss_weight"));
  const std::unique_ptr<Model> m = test::golden_model(g, DType::bf16);
  Model& model = *m;
  const ProcessGroups alone;
  TrainStep train(model, optimizer_config(g), alone, 1);

  const std::vector<int32_t> tokens = g.ints("/tokens");
  const size_t per_step = static_cast<size_t>(model.dims().batch * model.dims().window());
  const std::vector<float> total = g.floats("/losses/total"), norms = g.floats("/grad_norm");
  for (int step = 0; step < 3; ++step) {
    const StepResult r =
        train.run(step, g.attr_num("lr"), lambda, test::feed(tokens, step * per_step),
                  [&](const StepResult&) {
                    if (step == 0)
                      test::expect_param_grads(model.params(), g, "/grads0", 0.0f, 0.0f,
                                               test::bf16_bounds::kStep0Grads);
                  });
    if (step > 0) {
      EXPECT_NEAR(r.losses.total, total[step], 1e-2 * total[step]) << "step " << step;
      continue;
    }
    EXPECT_NEAR(r.losses.total, total[step], test::bf16_bounds::kLossStep0 * total[step]);
    EXPECT_NEAR(r.grad_norm, norms[step], test::bf16_bounds::kNormStep0 * norms[step]);
    expect_counts(g, r.moe, step);
  }
}

}  // namespace
}  // namespace moetron

namespace moetron {
namespace {

TEST(MoeModel, FlopsCountOnlyTheActiveExperts) {
  // An MoE model costs what a dense one of width (k + shared) * moe_intermediate costs, plus
  // its router, in every MoE layer (the MTP block included).
  config::ModelConfig dense;
  dense.set_vocab_size(64);
  dense.set_hidden_size(32);
  dense.set_num_hidden_layers(3);
  dense.set_num_attention_heads(4);
  dense.set_intermediate_size(3 * 16);
  dense.set_num_nextn_predict_layers(1);
  config::ModelConfig sparse = dense;
  sparse.mutable_moe()->set_n_routed_experts(8);
  sparse.mutable_moe()->set_num_experts_per_tok(2);
  sparse.mutable_moe()->set_moe_intermediate_size(16);
  sparse.mutable_moe()->set_n_shared_experts(1);
  sparse.mutable_moe()->set_first_k_dense_replace(1);
  const Model a(dense, 1, 8), b(sparse, 1, 8);
  const double router = 3.0 * 2.0 * 32 * 8;  // per token, forward + backward
  EXPECT_DOUBLE_EQ(b.train_flops_per_token() - a.train_flops_per_token(), 3 * router);
}

}  // namespace
}  // namespace moetron
