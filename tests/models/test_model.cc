// The whole model against the PyTorch goldens: losses, step-0 gradients, gradient norms and
// weights after three clipped AdamW steps; plus bitwise determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/threads.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/models/bf16_bounds.h"
#include "tests/models/golden_config.h"
#include "tests/models/layer_check.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using test::Golden;
using test::golden_path;
using test::model_config;
using test::optimizer_config;

class ModelGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelGolden, ThreeAdamWStepsMatchReference) {
  const Golden g(golden_path(GetParam()));
  const auto batch = static_cast<int64_t>(g.attr_num("batch"));
  const auto seq = static_cast<int64_t>(g.attr_num("seq_len"));
  const auto depth = static_cast<int64_t>(g.attr_num("num_nextn_predict_layers"));
  const auto lambda = static_cast<float>(g.attr_num("mtp_loss_weight"));
  Model model(model_config(g), batch, seq);
  test::load_params(model.params(), g, "/params");
  const ProcessGroups alone;
  TrainStep train(model, optimizer_config(g), alone, 1);

  const std::vector<int32_t> tokens = g.ints("/tokens");
  const std::vector<float> total = g.floats("/losses/total"), main = g.floats("/losses/main"),
                           mtp = g.floats("/losses/mtp"), norms = g.floats("/grad_norm");
  const size_t per_step = static_cast<size_t>(batch * model.dims().window());
  ASSERT_EQ(tokens.size(), 3 * per_step);
  for (int step = 0; step < 3; ++step) {
    const StepResult r =
        train.run(step, g.attr_num("lr"), lambda, test::feed(tokens, step * per_step),
                  [&](const StepResult&) {
                    if (step == 0)
                      test::expect_param_grads(model.params(), g, "/grads0", 1e-4f, 1e-6f);
                  });
    const Losses& l = r.losses;
    EXPECT_NEAR(l.total, total[step], 2e-5 * total[step]) << "step " << step;
    EXPECT_NEAR(l.main, main[step], 2e-5 * main[step]) << "step " << step;
    for (int64_t k = 0; k < depth; ++k)
      EXPECT_NEAR(l.mtp[k], mtp[step * depth + k], 2e-5 * mtp[step * depth + k])
          << "step " << step << " mtp " << k + 1;
    EXPECT_NEAR(r.grad_norm, norms[step], 1e-4 * norms[step]) << "step " << step;
  }
  const test::AdamCheck adam = test::golden_adam_check(g, 3);
  for (const ParamInfo& p : model.params().infos())
    adam.expect_close(model.params().value(model.params().find(p.name)).span<float>(),
                      g.floats("/params_final/" + p.name), p.name, g.attr_num("lr"));
}

INSTANTIATE_TEST_SUITE_P(Model, ModelGolden, ::testing::Values("model_mtp.h5", "model_tied.h5"));

// bf16 precision against the reference's emulation of the same plan (tests/reference/README.md:
// each projection the GEMM of bf16-rounded operands, the attention on bf16 operands with bf16
// results, all accumulated in fp32; the rest fp32), from the same weights and tokens as
// model_mtp.h5, to the bounds of tests/models/bf16_bounds.h (seen on AVX-512, 2026-12-02:
// step-0 gradients 4.8e-3 of a tensor's largest, weights 0.090 lr). AdamW's sign-like first
// updates of the elements at the gradients' noise level go either way, so the weights, whose
// later updates follow the gradients those moved, are compared by each tensor as a whole.
TEST(Model, Bf16ThreeAdamWStepsMatchTheReferencesEmulation) {
  const Golden g(golden_path("model_mtp_bf16.h5"));
  ASSERT_EQ(g.attr_str("precision"), "bf16");
  const auto depth = static_cast<int64_t>(g.attr_num("num_nextn_predict_layers"));
  const auto lambda = static_cast<float>(g.attr_num("mtp_loss_weight"));
  const std::unique_ptr<Model> m = test::golden_model(g, DType::bf16);
  Model& model = *m;
  const ProcessGroups alone;
  TrainStep train(model, optimizer_config(g), alone, 1);

  const std::vector<int32_t> tokens = g.ints("/tokens");
  const std::vector<float> total = g.floats("/losses/total"), mtp = g.floats("/losses/mtp"),
                           norms = g.floats("/grad_norm");
  const size_t per_step = static_cast<size_t>(model.dims().batch * model.dims().window());
  for (int step = 0; step < 3; ++step) {
    const StepResult r =
        train.run(step, g.attr_num("lr"), lambda, test::feed(tokens, step * per_step),
                  [&](const StepResult&) {
                    if (step == 0)
                      test::expect_param_grads(model.params(), g, "/grads0", 0.0f, 0.0f,
                                               test::bf16_bounds::kStep0Grads);
                  });
    const double loss_rtol =
        step == 0 ? test::bf16_bounds::kLossStep0 : test::bf16_bounds::kLossLater;
    const double norm_rtol =
        step == 0 ? test::bf16_bounds::kNormStep0 : test::bf16_bounds::kNormLater;
    EXPECT_NEAR(r.losses.total, total[step], loss_rtol * total[step]) << "step " << step;
    for (int64_t k = 0; k < depth; ++k)
      EXPECT_NEAR(r.losses.mtp[k], mtp[step * depth + k], loss_rtol * mtp[step * depth + k])
          << "step " << step << " mtp " << k + 1;
    EXPECT_NEAR(r.grad_norm, norms[step], norm_rtol * norms[step]) << "step " << step;
  }
  const double lr = g.attr_num("lr");
  double worst = 0;
  for (const ParamInfo& p : model.params().infos()) {
    const auto got = model.params().value(model.params().find(p.name)).span<float>();
    const std::vector<float> want = g.floats("/params_final/" + p.name);
    ASSERT_EQ(got.size(), want.size()) << p.name;
    const double rms = test::bf16_bounds::rms_difference(got, want);
    worst = std::max(worst, rms / lr);
    EXPECT_LT(rms, test::bf16_bounds::kWeightsRmsInLr * lr) << p.name;
  }
  std::cout << "worst root-mean-square weight difference: " << worst << " lr" << std::endl;
}

// In fp32 and in bf16 precision.
TEST(Model, SameSeedGivesBitwiseSameLossesAndGradients) {
  const Golden g(golden_path("model_mtp.h5"));
  for (const DType compute : {DType::f32, DType::bf16}) {
    auto run = [&] {
      Runtime rt;
      rt.compute = compute;
      Model model(model_config(g), 2, 24, rt);
      model.params().init(99, 0.05f);
      const std::vector<int32_t> tokens = g.ints("/tokens");
      const Losses l = model.forward_backward(
          std::span<const int32_t>(tokens).first(static_cast<size_t>(2 * model.dims().window())),
          0.3f, 1.0f);
      const auto grads = model.params().flat_grads().span<float>();
      return std::make_pair(l.total, std::vector<float>(grads.begin(), grads.end()));
    };
    const auto a = run(), b = run();
    EXPECT_EQ(a.first, b.first) << dtype_name(compute);
    EXPECT_EQ(a.second, b.second) << dtype_name(compute);
  }
}

// The parameters are drawn in parallel, each from its own generator: one thread or four give
// the same bits (and a draw on the order of threads would differ here, as four threads take the
// parameters in no fixed order).
TEST(Model, InitDrawsTheSameValuesOnAnyThreadCount) {
  const Golden g(golden_path("model_moe.h5"));
  const int before = compute_threads();
  std::vector<std::vector<float>> values;
  for (const int threads : {1, 4}) {
    set_compute_threads(threads);
    Model model(model_config(g), 1, 8);
    model.params().init(99, 0.05f);
    const auto v = model.params().flat_values().span<float>();
    values.emplace_back(v.begin(), v.end());
  }
  set_compute_threads(before);
  EXPECT_EQ(values[0], values[1]);
}

TEST(Model, ParameterNamesFollowHuggingFaceLayout) {
  const Golden g(golden_path("model_mtp.h5"));
  Model model(model_config(g), 1, 4);
  std::vector<std::string> names;
  for (const ParamInfo& p : model.params().infos()) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, g.names("/params"));
}

// The whole loss (MTP weight 0.5) against finite differences of the parameters `names` (12
// coordinates each, step `step` x max(1, |x|)).
void expect_loss_finite_differences(Model& model, std::span<const int32_t> tokens,
                                    std::initializer_list<const char*> names, float step) {
  ops::fill(model.params().flat_grads(), 0.0f);
  model.forward_backward(tokens, 0.5f, 1.0f);
  Tensor one = Tensor::empty({1});
  one.span<float>()[0] = 1.0f;
  auto fwd = [&] {
    Tensor y = Tensor::empty({1});
    y.span<float>()[0] = static_cast<float>(model.evaluate(tokens, 0.5f).total);
    return y;
  };
  for (const char* name : names) {
    const int id = model.params().find(name);
    ASSERT_GE(id, 0) << name;
    test::expect_finite_differences(name, model.params().value(id), model.params().grad(id), fwd,
                                    one, 12, 3e-2, 2e-3, step);
  }
}

TEST(Model, FiniteDifferencesOfTheWholeLoss) {
  const Golden g(golden_path("model_tied.h5"));
  Model model(model_config(g), 2, 24);
  test::load_params(model.params(), g, "/params");
  const std::vector<int32_t> all = g.ints("/tokens");
  const auto tokens =
      std::span<const int32_t>(all).first(static_cast<size_t>(2 * model.dims().window()));
  expect_loss_finite_differences(
      model, tokens,
      {"model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight",
       "model.layers.2.eh_proj.weight", "model.layers.2.hnorm.weight", "model.norm.weight"},
      1e-2f);
}

// The whole loss of a Gated DeltaNet hybrid (Gated DeltaNet, then gated attention with q/k
// norms, partial RoPE and an output gate, zero-centred norms, one MTP module; dense FFNs, so
// that no perturbation flips a routing choice), against finite differences of the parameters
// only the hybrid has. T = 70: the gated delta rule runs two chunks. A step of 1e-3: at 1e-2 the
// L2 norm of small q and k vectors bends the differences by up to 6% (the layer goldens hold the
// same backward to autograd).
TEST(Model, FiniteDifferencesOfAHybridsWholeLoss) {
  config::ModelConfig cfg;
  cfg.set_vocab_size(40);
  cfg.set_hidden_size(32);
  cfg.set_num_hidden_layers(2);
  cfg.set_num_attention_heads(4);
  cfg.set_num_key_value_heads(2);
  cfg.set_head_dim(12);
  cfg.set_intermediate_size(48);
  cfg.set_partial_rotary_factor(0.5f);
  cfg.set_attention_output_gate(true);
  cfg.set_qk_norm(true);
  cfg.set_zero_centered_norms(true);
  cfg.set_num_nextn_predict_layers(1);
  cfg.add_layer_types(config::ModelConfig::GATED_DELTANET);
  cfg.add_layer_types(config::ModelConfig::ATTENTION);
  config::GatedDeltaNetConfig* g = cfg.mutable_linear_attention();
  g->set_linear_num_key_heads(2);
  g->set_linear_key_head_dim(8);
  g->set_linear_num_value_heads(4);
  g->set_linear_value_head_dim(6);
  Model model(cfg, 2, 70);
  model.params().init(3, 0.2f);
  // The norms' offsets away from 0, so that their gradients are not a special case.
  for (const ParamInfo& p : model.params().infos())
    if (p.kind == ParamKind::norm && !p.name.ends_with("A_log") && !p.name.ends_with("dt_bias"))
      for (float& v : model.params().value(model.params().find(p.name)).span<float>())
        v += 0.1f * std::sin(static_cast<float>(&v - model.params().flat_values().data<float>()));
  std::vector<int32_t> tokens(static_cast<size_t>(2 * model.dims().window()));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + i / 5) % 40);
  expect_loss_finite_differences(
      model, tokens,
      {"model.layers.0.linear_attn.in_proj_q.weight", "model.layers.0.linear_attn.in_proj_a.weight",
       "model.layers.0.linear_attn.in_proj_b.weight", "model.layers.0.linear_attn.conv1d_v.weight",
       "model.layers.0.linear_attn.A_log", "model.layers.0.linear_attn.dt_bias",
       "model.layers.0.linear_attn.norm.weight", "model.layers.0.input_layernorm.weight",
       "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_norm.weight",
       "model.layers.2.self_attn.q_norm.weight", "model.layers.2.hnorm.weight"},
      1e-3f);
}

}  // namespace
}  // namespace moetron
