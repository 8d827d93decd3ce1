// The ops the gradient cases of test_ops.cc do not reach, on every backend against the CPU: the
// optimizer step, reductions and casts, the bf16 GEMM, column moves, the RoPE tables, routing
// and its backward, the dispatch plan, its slice and its row moves, the balancing losses, the
// expert GEMMs, the bias update and the decoding ops, Gated DeltaNet's among them. Each backend
// (backends(), with cpu:1, the CUDA backend's code on the host launchers) runs the same script from
// the same inputs; index outputs (the experts chosen, the plan) must be the CPU's exactly, values
// within 1e-5 relative plus 1e-6 of the largest, f64 sums within 1e-12 relative.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/kernels/gated_delta.h"
#include "core/ops.h"
#include "core/ops_decode.h"
#include "core/ops_linear_attention.h"
#include "tests/host_kernels.h"

namespace moetron {
namespace {

using Outputs = std::vector<std::pair<std::string, Tensor>>;  // on the host

// A plan's slice against the plan (on the host): the plan's kept rows whose token lies in the
// slice, in plan order, and each slot of those tokens pointing at its row among them.
void expect_slice_of(const ops::DispatchPlan& plan, const ops::PlanSlice& slice, int64_t k) {
  const std::vector<int64_t> offsets = ops::to_host<int64_t>(plan.offsets);
  const std::vector<int32_t> row_token = ops::to_host<int32_t>(plan.row_tokens());
  const std::vector<int32_t> slot_row = ops::to_host<int32_t>(plan.slot_row);
  const auto experts = static_cast<int64_t>(offsets.size()) - 1;
  std::vector<int32_t> tokens, new_row(row_token.size(), -1);
  std::vector<int64_t> counts(static_cast<size_t>(experts), 0);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
      if (const int32_t t = row_token[r]; t >= slice.begin && t < slice.end) {
        new_row[r] = static_cast<int32_t>(tokens.size());
        tokens.push_back(t);
        ++counts[e];
      }
  std::vector<int32_t> slots(slot_row.size(), -1);
  for (int64_t s = slice.begin * k; s < slice.end * k; ++s)
    if (slot_row[s] >= 0) slots[s] = new_row[slot_row[s]];
  ASSERT_EQ(slice.rows, static_cast<int64_t>(tokens.size()));
  EXPECT_GT(slice.rows, 0);
  EXPECT_LT(slice.rows, plan.rows);
  EXPECT_EQ(ops::to_host<int32_t>(slice.row_tokens()), tokens);
  EXPECT_EQ(ops::to_host<int32_t>(slice.slot_row), slots);
  EXPECT_EQ(ops::to_host<int64_t>(slice.host_counts), counts);
}

Outputs run_script(Device d) {
  std::mt19937 gen(7);
  auto in = [&](Shape s, float scale = 1.0f) {
    Tensor t = Tensor::empty(std::move(s));
    std::normal_distribution<float> normal(0.0f, scale);
    for (float& x : t.span<float>()) x = normal(gen);
    return ops::to_device(t, d);
  };
  auto out = [&](Shape s) {
    Tensor t = Tensor::empty(std::move(s), DType::f32, d);
    ops::fill(t, std::numeric_limits<float>::quiet_NaN());
    return t;
  };
  auto zeros = [&](Shape s, DType dt = DType::f32) { return Tensor::zeros(std::move(s), dt, d); };
  Outputs r;
  auto keep = [&](const std::string& name, const Tensor& t) {
    r.emplace_back(name, ops::to_device(t, Device{}));
  };

  // Elementwise, reductions, casts, columns.
  const Tensor a = in({37}), b = in({37});
  Tensor c = out({37});
  ops::add(a, b, c);
  keep("add", c);
  ops::axpy(0.3f, a, c);
  keep("axpy", c);
  ops::scale(c, -1.5f);
  keep("scale", c);
  Tensor sum = zeros({1}, DType::f64);
  ops::sum_squares(a, sum);
  ops::sum_squares(in({5000}), sum);  // more than one block
  keep("sum_squares", sum);
  Tensor words = Tensor::empty({37}, DType::bf16, d), wide = out({37});
  ops::cast(a, words);
  ops::cast(words, wide);
  keep("bf16 round trip", wide);
  const Tensor m1 = in({6, 9}), m2 = in({5, 9});
  Tensor w1 = Tensor::empty({6, 9}, DType::bf16, d), w2 = Tensor::empty({5, 9}, DType::bf16, d);
  ops::cast(m1, w1);
  ops::cast(m2, w2);
  Tensor prod = out({6, 5});
  ops::matmul(w1, false, w2, true, prod);
  keep("bf16 matmul", prod);
  Tensor cols = out({6, 14});
  const std::array<Tensor, 2> srcs{m1, in({6, 5})};
  ops::concat_cols(srcs, cols);
  keep("concat_cols", cols);
  std::array<Tensor, 2> parts{out({6, 4}), out({6, 10})};
  ops::split_cols(cols, parts);
  keep("split_cols 0", parts[0]);
  keep("split_cols 1", parts[1]);
  Tensor p = in({50}), m = zeros({50}), v = zeros({50});
  const Tensor g = in({50});
  for (int64_t step = 1; step <= 3; ++step)
    ops::adamw(p, g, m, v, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
  keep("adamw p", p);
  keep("adamw m", m);
  keep("adamw v", v);
  const std::vector<float> freqs{1.0f, 0.1f, 0.01f, 0.001f};
  Tensor cos = out({6, 4}), sin = out({6, 4});
  ops::rope_tables(ops::from_host(std::span<const float>(freqs), d), 1.2f, cos, sin);
  keep("rope cos", cos);
  keep("rope sin", sin);

  // Routing: 12 tokens, 8 experts in 4 groups, top-2 of the best 2 groups.
  const int64_t N = 12, E = 8, K = 2;
  const ops::RouterConfig rc{E, K, 4, 2, ops::Scoring::sigmoid, true, 2.5f};
  const Tensor logits = in({N, E}), bias = in({E}, 0.1f);
  Tensor scores = out({N, E}), gates = out({N, K});
  Tensor idx = Tensor::empty({N, K}, DType::i32, d);
  ops::router_forward(logits, bias, rc, scores, idx, gates);
  keep("router scores", scores);
  keep("router experts", idx);
  keep("router gates", gates);
  Tensor dscores = zeros({N, E}), dlogits = zeros({N, E});
  ops::router_backward(in({N, K}), scores, idx, rc, dscores, dlogits);
  keep("router dscores", dscores);
  keep("router dlogits", dlogits);
  ops::DispatchPlan plan = ops::make_dispatch_plan(N, K, E, d);
  ops::plan_dispatch(idx, scores, 3, plan);  // capacity 3: some slots dropped
  keep("plan counts", plan.counts);
  keep("plan offsets", plan.offsets);
  EXPECT_EQ(plan.host_offsets.device(), Device{});
  EXPECT_EQ(plan.host_offsets.span<int64_t>().back(), plan.rows);
  keep("plan host_offsets", plan.host_offsets);
  keep("plan rows", plan.row_tokens());
  keep("plan slot_row", plan.slot_row);
  const std::vector<float> sizes{static_cast<float>(plan.rows), static_cast<float>(plan.dropped)};
  keep("plan rows and dropped", ops::from_host(std::span<const float>(sizes)));
  // Tokens [4, 9) of it: a tensor-parallel rank's slice, made with the plan in the same call.
  ops::PlanSlice slice = ops::make_plan_slice(N, K, E, 4, 9, d);
  ops::DispatchPlan again = ops::make_dispatch_plan(N, K, E, d);
  const int64_t reads = backend(d).host_reads();
  ops::plan_dispatch(idx, scores, 3, again, &slice);
  EXPECT_EQ(backend(d).host_reads() - reads, d == Device{} ? 0 : 1)
      << "the slice's counts come back with the plan's";
  expect_slice_of(again, slice, K);
  keep("plan slice rows", slice.row_tokens());
  keep("plan slice slot_row", slice.slot_row);
  keep("plan slice counts", slice.host_counts);
  const Tensor x = in({N, 6});
  Tensor rows = out({plan.rows, 6});
  ops::gather_rows(x, plan.row_tokens(), rows);
  keep("gather_rows", rows);
  Tensor combined = out({N, 6});
  ops::combine_rows(rows, plan.slot_row, gates, K, combined, false);
  keep("combine_rows", combined);
  Tensor drows = out({plan.rows, 6}), dgates = out({N, K});
  ops::combine_rows_backward(in({N, 6}), rows, plan.slot_row, gates, K, drows, dgates);
  keep("combine_rows_backward rows", drows);
  keep("combine_rows_backward gates", dgates);
  const ops::BalanceConfig bc{0.01f, 0.001f, 0.0001f, 3, 4};
  Tensor sums = zeros({ops::kBalanceSums}, DType::f64), bds = out({N, E}), bdl = out({N, E});
  ops::balance_losses(logits, scores, plan.counts, rc, bc, 0.5f, &bds, &bdl, &sums);
  keep("balance sums", sums);
  keep("balance dscores", bds);
  keep("balance dlogits", bdl);
  std::vector<Tensor> experts, dexperts;
  for (int64_t e = 0; e < E; ++e) {
    experts.push_back(in({4, 6}));
    dexperts.push_back(zeros({4, 6}));
  }
  Tensor y = out({plan.rows, 4}), dx = out({plan.rows, 6});
  ops::grouped_matmul(rows, experts, plan.offsets, y);
  keep("grouped_matmul", y);
  ops::grouped_matmul_backward(in({plan.rows, 4}), rows, experts, plan.offsets, dexperts, dx);
  keep("grouped_matmul dx", dx);
  for (int64_t e = 0; e < E; ++e) keep("grouped_matmul dw " + std::to_string(e), dexperts[e]);
  // The same GEMM over the plan's host copy of the offsets (what the MoE layer passes): the same
  // rows, no copy back.
  Tensor y_host = out({plan.rows, 4});
  ops::grouped_matmul(rows, experts, plan.host_offsets, y_host);
  EXPECT_EQ(ops::to_host<float>(y_host), ops::to_host<float>(y)) << "host offsets";
  Tensor expert_bias = in({E});
  ops::balance_bias_update(expert_bias, plan.counts, 0.01f);
  keep("balance_bias_update", expert_bias);

  // Decoding: rows by transposed weights, a KV cache filled by store_keys, a latent cache.
  const Tensor xr = in({3, 10}), w = in({7, 10});
  Tensor wt = out({10, 7}), yr = out({3, 7});
  ops::transpose(w, wt);
  keep("transpose", wt);
  ops::linear_rows(xr, wt, yr);
  keep("linear_rows", yr);
  const int64_t T = 9, H = 4, KV = 2, hd = 8;
  Tensor keys_t = out({KV, hd, T});
  const Tensor values = in({T, KV, hd}), keys = in({T, KV, hd}), q = in({T, H, hd});
  ops::store_keys(keys.slice(0, 5), 0, keys_t);
  ops::store_keys(keys.slice(5, T), 5, keys_t);
  keep("store_keys", keys_t);
  Tensor att = out({4, H, hd});
  ops::attention_decode(q.slice(5, T), keys_t, values, 5, att);
  keep("attention_decode", att);
  const Tensor cache = in({T, 10}), ql = in({3, 4, 10});
  Tensor latent = out({3, 4, 6});
  ops::attention_decode_latent(ql, cache, 5, 0.3f, latent);
  keep("attention_decode_latent", latent);
  // Gated DeltaNet's decoding steps: the conv window and the delta rule's state in place.
  const Tensor conv_w = in({6, 4}, 0.5f);
  Tensor conv_state = in({3, 6}), conv_y = out({5, 6});
  ops::conv_silu_step(in({5, 6}), conv_w, conv_state, conv_y);
  keep("conv_silu_step y", conv_y);
  keep("conv_silu_step state", conv_state);
  // Two key heads of 4, each read by two value heads of 3.
  Tensor delta_state = in({4, 4, 3}, 0.1f), delta_out = out({3, 4, 3});
  Tensor decay = in({3, 4}, 0.1f), write = in({3, 4}, 0.1f);
  ops::scale(decay, -1.0f);
  ops::gated_delta_step(in({3, 2, 4}, 0.5f), in({3, 2, 4}, 0.5f), in({3, 4, 3}), decay, write,
                        delta_state, delta_out);
  keep("gated_delta_step out", delta_out);
  keep("gated_delta_step state", delta_state);
  // The chunked rule over two chunks (70 positions) with the same heads, forward and backward:
  // the device's phases split the work by head, chunk and value column (the op cases have one
  // key head).
  const int64_t DB = 2, DT = 70, chunks = (DT + ops::kGatedDeltaChunk - 1) / ops::kGatedDeltaChunk;
  const Tensor q_seq = in({DB, DT, 2, 4}, 0.5f), k_seq = in({DB, DT, 2, 4}, 0.5f);
  const Tensor v_seq = in({DB, DT, 4, 3});
  Tensor g_seq = in({DB, DT, 4}, 0.05f);
  ops::scale(g_seq, -1.0f);
  const Tensor beta_seq = in({DB, DT, 4}, 0.3f);
  Tensor delta_seq = out({DB, DT, 4, 3}), states = out({DB, 4, chunks + 1, 4, 3});
  ops::gated_delta_forward(q_seq, k_seq, v_seq, g_seq, beta_seq, delta_seq, states);
  keep("gated_delta_forward out", delta_seq);
  keep("gated_delta_forward states", states);
  Tensor gq = out({DB, DT, 2, 4}), gk = out({DB, DT, 2, 4}), gv = out({DB, DT, 4, 3});
  Tensor gg = out({DB, DT, 4}), gb = out({DB, DT, 4});
  ops::gated_delta_backward(in({DB, DT, 4, 3}), q_seq, k_seq, v_seq, g_seq, beta_seq, states, gq,
                            gk, gv, gg, gb);
  keep("gated_delta_backward dq", gq);
  keep("gated_delta_backward dk", gk);
  keep("gated_delta_backward dv", gv);
  keep("gated_delta_backward dg", gg);
  keep("gated_delta_backward dbeta", gb);
  return r;
}

template <typename T>
::testing::AssertionResult equal_values(const Tensor& got, const Tensor& want) {
  for (int64_t i = 0; i < want.numel(); ++i)
    if (got.data<T>()[i] != want.data<T>()[i])
      return ::testing::AssertionFailure()
             << "[" << i << "] " << got.data<T>()[i] << " vs " << want.data<T>()[i];
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult matches(const Tensor& got, const Tensor& want) {
  if (got.dtype() != want.dtype() || got.numel() != want.numel())
    return ::testing::AssertionFailure() << "dtype or size differs";
  const int64_t n = want.numel();
  switch (want.dtype()) {
    case DType::i32:
      return equal_values<int32_t>(got, want);
    case DType::i64:
      return equal_values<int64_t>(got, want);
    case DType::f64:
      for (int64_t i = 0; i < n; ++i) {
        const double g = got.data<double>()[i], w = want.data<double>()[i];
        if (!(std::abs(g - w) <= 1e-12 * std::abs(w)))
          return ::testing::AssertionFailure() << "[" << i << "] " << g << " vs " << w;
      }
      return ::testing::AssertionSuccess();
    default: {
      double largest = 0;
      for (float w : want.span<float>()) largest = std::max(largest, std::abs(double{w}));
      for (int64_t i = 0; i < n; ++i) {
        const double g = got.data<float>()[i], w = want.data<float>()[i];
        if (!(std::abs(g - w) <= 1e-5 * std::abs(w) + 1e-6 * largest))
          return ::testing::AssertionFailure() << "[" << i << "] " << g << " vs " << w;
      }
      return ::testing::AssertionSuccess();
    }
  }
}

TEST(OpBackends, StepRoutingAndDecodingOpsMatchTheCpu) {
  test::host_kernels_device();
  const Outputs want = run_script(Device{});
  int others = 0;
  for (Backend* b : backends()) {
    if (b->device() == Device{}) continue;
    ++others;
    SCOPED_TRACE(b->name());
    const Outputs got = run_script(b->device());
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_TRUE(matches(got[i].second, want[i].second)) << want[i].first;
  }
  EXPECT_GE(others, 1) << "cpu:1 is always there";
}

// Ids outside the vocabulary on every backend: with a count to add to, the embedding and both
// cross-entropies count them (zero rows, no logit read) and read nothing back; without one they
// raise, naming the id.
TEST(OpBackends, IdsOutsideTheVocabularyAreCountedWhereAskedAndRaisedOtherwise) {
  test::host_kernels_device();
  constexpr int64_t kVocab = 10, kDim = 4;
  const std::vector<int32_t> host_ids{3, 10, -1, 5, 9, 2047};  // three outside [0, 10)
  for (Backend* b : backends()) {
    SCOPED_TRACE(b->name());
    const Device d = b->device();
    Tensor ids = Tensor::empty({6}, DType::i32, d);
    ops::copy_from_host(std::span<const int32_t>(host_ids), ids);
    auto full = [&](Shape s, float v) {
      Tensor t = Tensor::empty(std::move(s), DType::f32, d);
      ops::fill(t, v);
      return t;
    };
    const Tensor table = full({kVocab, kDim}, 1.0f), h = full({6, kDim}, 0.5f);
    Tensor out = Tensor::empty({6, kDim}, DType::f32, d);
    Tensor outside = Tensor::zeros({1}, DType::f64, d), loss = Tensor::zeros({1}, DType::f64, d);
    Tensor ws = Tensor::empty({ops::ce_workspace_size(6, kVocab, d)}, DType::f32, d);
    Tensor stats = Tensor::empty({6, 3}, DType::f32, d);
    const int64_t reads = b->host_reads();
    ops::embedding_forward(ids, table, out, {}, &outside);
    ops::head_cross_entropy(h, table, ids, 1.0f, nullptr, nullptr, ws, loss, &outside);
    Tensor logits = Tensor::empty({6, kVocab}, DType::f32, d);
    ops::matmul(h, false, table, true, logits);
    ops::ce_shard_stats(logits, ids, {}, stats, &outside);
    EXPECT_EQ(b->host_reads(), reads) << "counting reads nothing back";
    EXPECT_EQ(ops::to_host<double>(outside)[0], 9.0);
    const std::vector<float> rows = ops::to_host<float>(out);
    for (size_t i = 0; i < host_ids.size(); ++i)
      EXPECT_EQ(rows[i * kDim], host_ids[i] >= 0 && host_ids[i] < kVocab ? 1.0f : 0.0f) << i;
    // Each row's lse is ln(10) + 2 (every logit is 2); a row whose target is outside has no
    // target logit to subtract.
    EXPECT_NEAR(ops::to_host<double>(loss)[0], 6 * (std::log(10.0) + 2.0) - 3 * 2.0, 1e-5);
    try {
      ops::embedding_forward(ids, table, out);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("token id 10 is outside the vocabulary [0, 10)"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(ops::head_cross_entropy(h, table, ids, 1.0f, nullptr, nullptr, ws, loss), Error);
    EXPECT_THROW(ops::ce_shard_stats(logits, ids, {}, stats), Error);
  }
}

// A device backend's kernel scratch is its memory too: memory_use counts it with the tensors
// (the gated delta rule's backward takes the most, docs/gpu.md).
TEST(OpBackends, TheDevicesScratchIsCountedInItsMemoryUse) {
  const Device d = test::host_kernels_device();
  const kernels::GatedDeltaDims s{1, 1024, 2, 4, 64, 64, ops::kGatedDeltaChunk};
  auto zeros = [&](Shape shape) { return Tensor::zeros(std::move(shape), DType::f32, d); };
  const Tensor q = zeros({1, 1024, 2, 64}), v = zeros({1, 1024, 4, 64}), g = zeros({1, 1024, 4});
  const Tensor states = zeros({1, 4, s.chunks() + 1, 64, 64});
  Tensor dq = zeros(q.shape()), dk = zeros(q.shape()), dv = zeros(v.shape());
  Tensor dg = zeros(g.shape()), dbeta = zeros(g.shape());
  ops::gated_delta_backward(v, q, q, v, g, g, states, dq, dk, dv, dg, dbeta);
  const int64_t tensors = 2 * v.bytes() + 3 * q.bytes() + 3 * g.bytes() + states.bytes();
  const auto work = kernels::gd_work_floats(s, true) * static_cast<int64_t>(sizeof(float));
  EXPECT_GT(work, 10'000'000);  // far above what else lives on the device here
  EXPECT_GE(backend(d).memory_use().live, tensors + work);
}

// The experts' weights are read in place, so a weight on another device than the rows is an
// Error naming it (on cpu:1 both are host memory, so nothing else would stop it; a GPU faults).
TEST(OpBackends, AnExpertWeightOffTheRowsDeviceIsRefusedWithItsIndex) {
  const Device d = test::host_kernels_device();
  const Tensor x = Tensor::zeros({4, 3}, DType::f32, d);
  const std::vector<Tensor> weights = {Tensor::zeros({3, 2}, DType::f32, d),
                                       Tensor::zeros({3, 2}, DType::f32, Device{})};
  Tensor offsets = Tensor::zeros({3}, DType::i64, Device{});
  offsets.data<int64_t>()[1] = 2;
  offsets.data<int64_t>()[2] = 4;
  Tensor y = Tensor::zeros({4, 2}, DType::f32, d);
  try {
    ops::grouped_matmul(x, weights, offsets, y);
    ADD_FAILURE() << "a host weight beside rows on " << device_name(d) << " accepted";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("grouped_matmul: weight 1 on cpu beside x on " + device_name(d)),
        std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moetron
