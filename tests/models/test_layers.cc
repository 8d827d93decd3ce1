// Each layer against the PyTorch goldens (forward, input gradient, parameter gradients) and
// against finite differences of its own forward.
#include <gtest/gtest.h>

#include <memory>

#include "models/attention.h"
#include "models/block.h"
#include "models/head.h"
#include "models/mla.h"
#include "models/rmsnorm.h"
#include "models/swiglu.h"
#include "tests/models/layer_check.h"

namespace moetron {
namespace {

using test::all_close;
using test::Golden;
using test::golden_path;

// Batch, sequence, heads and RoPE settings: what the rope and attention files share.
ModelDims head_dims(const Golden& g) {
  ModelDims d;
  d.batch = static_cast<int64_t>(g.attr_num("batch"));
  d.seq = static_cast<int64_t>(g.attr_num("seq_len"));
  d.heads = static_cast<int64_t>(g.attr_num("heads"));
  d.head_dim = static_cast<int64_t>(g.attr_num("head_dim"));
  d.rope_dim = d.head_dim;
  d.rope_theta = static_cast<float>(g.attr_num("rope_theta"));
  d.rope_style = g.attr_str("rope_style") == "interleaved" ? ops::RopeStyle::interleaved
                                                           : ops::RopeStyle::rotate_half;
  return d;
}

ModelDims dims_from(const Golden& g) {
  ModelDims d = head_dims(g);
  d.hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  d.kv_heads = static_cast<int64_t>(g.attr_num("kv_heads"));
  return d;
}

// A layer under test: forward(x) -> y and backward(dy) -> dx, over one ParamTable.
struct LayerUnderTest {
  ParamTable params;
  Tensor x, y, dx;
  std::function<void()> forward;
  std::function<void(const Tensor& dy)> backward;
};

// Runs the golden comparison, then finite differences on x and every parameter.
void check_layer(LayerUnderTest& l, const Golden& g, float rtol, float atol) {
  test::load_params(l.params, g, "/params");
  const Tensor dy = test::tensor_from(g, "/inputs/dy", l.y.shape());
  l.forward();
  EXPECT_TRUE(all_close(l.y.span<float>(), g.floats("/outputs/y"), rtol, atol)) << "forward";
  ops::fill(l.params.flat_grads(), 0.0f);
  l.backward(dy);
  EXPECT_TRUE(all_close(l.dx.span<float>(), g.floats("/grads/x"), rtol, atol)) << "input grad";
  test::expect_param_grads(l.params, g, "/grads/params", rtol, atol);

  auto fwd = [&] {
    l.forward();
    return l.y;
  };
  test::expect_finite_differences("x", l.x, l.dx, fwd, dy);
  for (int id = 0; id < static_cast<int>(l.params.infos().size()); ++id)
    test::expect_finite_differences(l.params.info(id).name, l.params.value(id), l.params.grad(id),
                                    fwd, dy);
}

TEST(Layers, RMSNorm) {
  const Golden g(golden_path("rmsnorm.h5"));
  const auto rows = static_cast<int64_t>(g.attr_num("rows"));
  const auto hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  LayerUnderTest l;
  RMSNorm norm(l.params, "weight", hidden, static_cast<float>(g.attr_num("eps")), Runtime{});
  l.params.allocate();
  l.x = test::tensor_from(g, "/inputs/x", {rows, hidden});
  l.y = Tensor::empty({rows, hidden});
  l.dx = Tensor::empty({rows, hidden});
  l.forward = [&] { norm.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { norm.backward(dy, l.x, l.dx, false); };
  check_layer(l, g, 1e-4f, 1e-5f);
}

class AttentionGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(AttentionGolden, MatchesReference) {
  const Golden g(golden_path(GetParam()));
  const ModelDims d = dims_from(g);
  const RopeTables rope = RopeTables::make(d, d.seq);
  LayerUnderTest l;
  Attention attn(l.params, "", d, rope, Runtime{});
  l.params.allocate();
  l.x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  l.y = Tensor::empty({d.rows(), d.hidden});
  l.dx = Tensor::empty({d.rows(), d.hidden});
  l.forward = [&] { attn.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { attn.backward(dy, l.x, l.dx); };
  check_layer(l, g, 1e-4f, 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(Layers, AttentionGolden,
                         ::testing::Values("attention_mha_rotate_half.h5",
                                           "attention_gqa_interleaved.h5"));

// MLA (tests/reference/mla.py): its RoPE tables (YaRN included), forward, input and parameter
// gradients against the PyTorch reference, and finite differences.
ModelDims mla_dims(const Golden& g) {
  ModelDims d;
  d.batch = static_cast<int64_t>(g.attr_num("batch"));
  d.seq = static_cast<int64_t>(g.attr_num("seq_len"));
  d.heads = static_cast<int64_t>(g.attr_num("heads"));
  d.rope_theta = static_cast<float>(g.attr_num("rope_theta"));
  d.rope_style = g.attr_str("rope_style") == "interleaved" ? ops::RopeStyle::interleaved
                                                           : ops::RopeStyle::rotate_half;
  d.hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  d.eps = static_cast<float>(g.attr_num("rms_norm_eps"));
  auto n = [&](const char* attr) { return static_cast<int64_t>(g.attr_num(attr)); };
  d.mla = {n("q_lora_rank"), n("kv_lora_rank"), n("qk_nope_head_dim"), n("qk_rope_head_dim"),
           n("v_head_dim")};
  d.rope_dim = d.mla.rope;
  if (g.attr_num("yarn_factor") > 0) {
    auto f = [&](const char* attr) { return static_cast<float>(g.attr_num(attr)); };
    d.yarn = {f("yarn_factor"),         f("yarn_beta_fast"),
              f("yarn_beta_slow"),      f("yarn_mscale"),
              f("yarn_mscale_all_dim"), n("yarn_original_max_position_embeddings")};
  }
  return d;
}

class MlaGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(MlaGolden, MatchesReference) {
  const Golden g(golden_path(GetParam()));
  const ModelDims d = mla_dims(g);
  const RopeTables rope = RopeTables::make(d, d.seq);
  EXPECT_TRUE(all_close(rope.cos.span<float>(), g.floats("/outputs/rope_cos"), 1e-6f, 1e-6f));
  EXPECT_TRUE(all_close(rope.sin.span<float>(), g.floats("/outputs/rope_sin"), 1e-6f, 1e-6f));
  LayerUnderTest l;
  Mla mla(l.params, "", d, rope, Runtime{});
  l.params.allocate();
  l.x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  l.y = Tensor::empty({d.rows(), d.hidden});
  l.dx = Tensor::empty({d.rows(), d.hidden});
  l.forward = [&] { mla.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { mla.backward(dy, l.x, l.dx); };
  check_layer(l, g, 1e-4f, 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(Layers, MlaGolden,
                         ::testing::Values("mla_q_lora_interleaved.h5",
                                           "mla_no_q_lora_rotate_half.h5", "mla_yarn.h5"));

TEST(Layers, AttentionCoreLong) {
  const Golden g(golden_path("attention_core_long.h5"));
  const Shape qs{1, 150, 2, 16}, ks{1, 150, 1, 16};
  const Tensor q = test::tensor_from(g, "/inputs/q", qs), k = test::tensor_from(g, "/inputs/k", ks),
               v = test::tensor_from(g, "/inputs/v", ks),
               dy = test::tensor_from(g, "/inputs/dy", qs);
  Tensor out = Tensor::empty(qs), lse = Tensor::empty({1, 2, 150});
  ops::attention_forward(q, k, v, 0.25f, out, lse);
  EXPECT_TRUE(all_close(out.span<float>(), g.floats("/outputs/y"), 1e-4f, 2e-5f));
  Tensor dq = Tensor::empty(qs), dk = Tensor::empty(ks), dv = Tensor::empty(ks);
  ops::attention_backward(dy, q, k, v, 0.25f, out, lse, dq, dk, dv);
  EXPECT_TRUE(all_close(dq.span<float>(), g.floats("/grads/q"), 1e-4f, 2e-5f)) << "dq";
  EXPECT_TRUE(all_close(dk.span<float>(), g.floats("/grads/k"), 1e-4f, 2e-5f)) << "dk";
  EXPECT_TRUE(all_close(dv.span<float>(), g.floats("/grads/v"), 1e-4f, 2e-5f)) << "dv";
}

class RopeGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(RopeGolden, MatchesReference) {
  const Golden g(golden_path(GetParam()));
  const ModelDims d = head_dims(g);
  const Shape s{d.batch, d.seq, d.heads, d.head_dim};
  const RopeTables rope = RopeTables::make(d, d.seq);
  Tensor x = test::tensor_from(g, "/inputs/x", s);
  ops::rope(x, rope.cos, rope.sin, rope.style, false);
  EXPECT_TRUE(all_close(x.span<float>(), g.floats("/outputs/y"), 1e-5f, 1e-5f));
  Tensor dx = test::tensor_from(g, "/inputs/dy", s);
  ops::rope(dx, rope.cos, rope.sin, rope.style, true);
  EXPECT_TRUE(all_close(dx.span<float>(), g.floats("/grads/x"), 1e-5f, 1e-5f));
}

INSTANTIATE_TEST_SUITE_P(Layers, RopeGolden,
                         ::testing::Values("rope_rotate_half.h5", "rope_interleaved.h5"));

TEST(Layers, SwiGLU) {
  const Golden g(golden_path("swiglu.h5"));
  const auto rows = static_cast<int64_t>(g.attr_num("rows"));
  const auto hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  const auto inter = static_cast<int64_t>(g.attr_num("intermediate_size"));
  LayerUnderTest l;
  ModelDims d;
  d.batch = rows;
  d.hidden = hidden;
  SwiGLU mlp(l.params, "", d, inter, Runtime{});
  l.params.allocate();
  l.x = test::tensor_from(g, "/inputs/x", {rows, hidden});
  l.y = Tensor::empty({rows, hidden});
  l.dx = Tensor::empty({rows, hidden});
  l.forward = [&] { mlp.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { mlp.backward(dy, l.x, l.dx); };
  check_layer(l, g, 1e-4f, 1e-5f);
}

TEST(Layers, Block) {
  const Golden g(golden_path("block.h5"));
  ModelDims d = dims_from(g);
  d.intermediate = static_cast<int64_t>(g.attr_num("intermediate_size"));
  d.eps = static_cast<float>(g.attr_num("rms_norm_eps"));
  const RopeTables rope = RopeTables::make(d, d.seq);
  LayerUnderTest l;
  Block block(l.params, "", d, rope, MixerKind::attention, /*moe=*/false, Runtime{});
  l.params.allocate();
  l.x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  l.y = Tensor::empty({d.rows(), d.hidden});
  l.dx = Tensor::empty({d.rows(), d.hidden});
  l.forward = [&] { block.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { block.backward(dy, l.x, l.dx); };
  check_layer(l, g, 1e-4f, 1e-5f);
}

TEST(Layers, HeadCrossEntropy) {
  const Golden g(golden_path("head_ce.h5"));
  const auto rows = static_cast<int64_t>(g.attr_num("rows"));
  const auto hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  const auto vocab = static_cast<int64_t>(g.attr_num("vocab_size"));
  ParamTable params;
  ModelDims d;
  d.batch = rows;
  d.hidden = hidden;
  d.vocab = vocab;
  OutputHead head(params.add("weight", {vocab, hidden}, ParamKind::matrix), {}, d, {});
  params.allocate();
  test::load_params(params, g, "/params");
  Tensor h = test::tensor_from(g, "/inputs/h", {rows, hidden});
  const std::vector<int32_t> target_ids = g.ints("/inputs/targets");
  const Tensor targets = ops::from_host(std::span<const int32_t>(target_ids));
  Tensor dh = Tensor::empty({rows, hidden});
  // The head adds the summed loss into a device scalar: the mean is its 1/rows.
  auto mean_loss = [&](float grad_weight, Tensor* d) {
    Tensor sum = Tensor::zeros({1}, DType::f64);
    head.loss(h, targets, grad_weight, d, sum);
    return ops::to_host<double>(sum)[0] / static_cast<double>(rows);
  };
  const double loss = mean_loss(1.0f, &dh);
  EXPECT_NEAR(loss, g.floats("/outputs/loss")[0], 1e-5 * std::abs(loss));
  EXPECT_TRUE(all_close(dh.span<float>(), g.floats("/grads/h"), 1e-4f, 1e-6f)) << "dh";
  test::expect_param_grads(params, g, "/grads/params", 1e-4f, 1e-6f);

  // Finite differences of the mean loss (dy = 1).
  Tensor one = Tensor::empty({1});
  one.span<float>()[0] = 1.0f;
  auto fwd = [&] {
    Tensor y = Tensor::empty({1});
    y.span<float>()[0] = static_cast<float>(mean_loss(0.0f, nullptr));
    return y;
  };
  test::expect_finite_differences("h", h, dh, fwd, one);
  test::expect_finite_differences("weight", params.value(0), params.grad(0), fwd, one);
}

}  // namespace
}  // namespace moetron
