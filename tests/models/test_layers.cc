// Each layer against the PyTorch goldens (forward, input gradient, parameter gradients) and
// against finite differences of its own forward.
#include <gtest/gtest.h>

#include <memory>

#include "models/attention.h"
#include "models/block.h"
#include "models/gated_deltanet.h"
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

// Runs the golden comparison, then finite differences on x and every parameter (within fd_rtol:
// central differences with a step of 1e-2 carry the forward's curvature).
void check_layer(LayerUnderTest& l, const Golden& g, float rtol, float atol,
                 double fd_rtol = 2e-2) {
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
  test::expect_finite_differences("x", l.x, l.dx, fwd, dy, 24, fd_rtol);
  for (int id = 0; id < static_cast<int>(l.params.infos().size()); ++id)
    test::expect_finite_differences(l.params.info(id).name, l.params.value(id), l.params.grad(id),
                                    fwd, dy, 24, fd_rtol);
}

// check_layer for a layer of [rows, hidden] in and out (a mixer or a block), its parameters
// allocated and `layer` built over l.params.
template <typename Layer>
void check_hidden_layer(Layer& layer, LayerUnderTest& l, const Golden& g, const ModelDims& d,
                        double fd_rtol = 2e-2) {
  l.x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  l.y = Tensor::empty({d.rows(), d.hidden});
  l.dx = Tensor::empty({d.rows(), d.hidden});
  l.forward = [&] { layer.forward(l.x, l.y); };
  l.backward = [&](const Tensor& dy) { layer.backward(dy, l.x, l.dx); };
  check_layer(l, g, 1e-4f, 1e-5f, fd_rtol);
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
  check_hidden_layer(attn, l, g, d);
}

INSTANTIATE_TEST_SUITE_P(Layers, AttentionGolden,
                         ::testing::Values("attention_mha_rotate_half.h5",
                                           "attention_gqa_interleaved.h5"));

// Qwen3-Next's gated attention (tests/reference/qwen35.py): head_dim apart from hidden / heads,
// RoPE on the first half of each head, zero-centred q/k norms, the sigmoid output gate.
TEST(Layers, GatedAttentionMatchesReference) {
  const Golden g(golden_path("gated_attention.h5"));
  ModelDims d = dims_from(g);
  d.rope_dim = static_cast<int64_t>(g.attr_num("rotary_dim"));
  d.eps = static_cast<float>(g.attr_num("rms_norm_eps"));
  d.output_gate = d.qk_norm = d.zero_centered_norms = true;
  const RopeTables rope = RopeTables::make(d, d.seq);
  EXPECT_TRUE(all_close(rope.cos.span<float>(), g.floats("/outputs/rope_cos"), 1e-6f, 1e-6f));
  EXPECT_TRUE(all_close(rope.sin.span<float>(), g.floats("/outputs/rope_sin"), 1e-6f, 1e-6f));
  LayerUnderTest l;
  Attention attn(l.params, "", d, rope, Runtime{});
  l.params.allocate();
  check_hidden_layer(attn, l, g, d);
}

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
  check_hidden_layer(mla, l, g, d);
}

INSTANTIATE_TEST_SUITE_P(Layers, MlaGolden,
                         ::testing::Values("mla_q_lora_interleaved.h5",
                                           "mla_no_q_lora_rotate_half.h5", "mla_yarn.h5"));

// Gated DeltaNet (tests/reference/gdn.py: the naive recurrence): the chunked training form's
// forward, input and parameter gradients and finite differences; then the recurrent decoding
// form, fed each sequence in two pieces, against the same outputs and the final state.
ModelDims gdn_dims(const Golden& g) {
  ModelDims d;
  auto n = [&](const char* attr) { return static_cast<int64_t>(g.attr_num(attr)); };
  d.batch = n("batch");
  d.seq = n("seq_len");
  d.hidden = n("hidden_size");
  d.eps = static_cast<float>(g.attr_num("rms_norm_eps"));
  d.gdn = {n("linear_num_key_heads"), n("linear_key_head_dim"), n("linear_num_value_heads"),
           n("linear_value_head_dim"), n("linear_conv_kernel_dim")};
  d.rope_dim = 2;  // unused by the mixer; the decoding step carries tables
  return d;
}

class GdnGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(GdnGolden, TrainingFormMatchesReference) {
  const Golden g(golden_path(GetParam()));
  const ModelDims d = gdn_dims(g);
  LayerUnderTest l;
  GatedDeltaNet gdn(l.params, "", d, Runtime{});
  l.params.allocate();
  // Against the goldens to 1e-4; finite differences within 5e-2: through the conv, SiLU and L2
  // norm a step of 1e-2 on a conv tap (weights N(0, 0.5), gradients near 19) is 2.5% off.
  check_hidden_layer(gdn, l, g, d, 5e-2);
}

TEST_P(GdnGolden, DecodingFormMatchesReference) {
  const Golden g(golden_path(GetParam()));
  const ModelDims d = gdn_dims(g);
  ParamTable params;
  GatedDeltaNet gdn(params, "", d, Runtime{});
  params.allocate();
  test::load_params(params, g, "/params");
  const Tensor x = test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden});
  const std::vector<float> want_y = g.floats("/outputs/y"),
                           want_s = g.floats("/outputs/final_state");
  const RopeTables rope = RopeTables::make(d, d.seq);
  TransposedWeights weights;
  const int64_t state_size = d.gdn.v_heads * d.gdn.k_dim * d.gdn.v_dim;
  for (int64_t b = 0; b < d.batch; ++b) {
    std::vector<Tensor> state;
    for (const Shape& s : gdn.decode_state(d.seq)) state.push_back(Tensor::zeros(s));
    Tensor y = Tensor::empty({d.seq, d.hidden});
    const int64_t split = d.seq / 3;  // a short piece (fixed-order kernels), then a long one
    for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, split}, {split, d.seq}}) {
      const DecodeStep step{weights, t1 - t0 <= kFixedOrderRows, t0, rope, state};
      Tensor yo = y.slice(t0, t1);
      gdn.forward(x.slice(b * d.seq + t0, b * d.seq + t1), yo, step);
    }
    const std::span<const float> want(want_y.data() + b * d.seq * d.hidden,
                                      static_cast<size_t>(d.seq * d.hidden));
    EXPECT_TRUE(all_close(y.span<float>(), want, 1e-4f, 1e-5f)) << "outputs, sequence " << b;
    const std::span<const float> want_state(want_s.data() + b * state_size,
                                            static_cast<size_t>(state_size));
    EXPECT_TRUE(all_close(state[1].span<float>(), want_state, 1e-4f, 1e-5f))
        << "final state, sequence " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, GdnGolden, ::testing::Values("gdn_small.h5", "gdn_mha.h5"));

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
  check_hidden_layer(block, l, g, d);
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
