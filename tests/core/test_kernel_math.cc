// The CUDA kernels' math (core/kernels/*.h), run on the CPU by the host launchers of
// core/kernels/host.h, against the CPU backend: the same functions the __global__ kernels of
// core/cuda/kernels.cu run, checked without a GPU (tests/core/test_cuda.cc compares them with
// the device where one is visible). Float reductions and exp within stated tolerances.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "core/kernels/gemm_plan.h"
#include "core/kernels/host.h"
#include "core/ops.h"
#include "tests/compare.h"
#include "tests/random_values.h"
#include "tests/rope_tables.h"
#include "tests/routed.h"

namespace moetron {
namespace {

using test::random_values;

Tensor tensor(const std::vector<float>& v, Shape shape) {
  Tensor t = Tensor::empty(std::move(shape));
  std::copy(v.begin(), v.end(), t.span<float>().begin());
  return t;
}

using test::max_relative;

TEST(KernelMath, SwigluMatchesTheCpuBackend) {
  constexpr int64_t rows = 37, width = 45;  // no multiple of a block or a vector width
  const std::vector<float> gu = random_values(rows * 2 * width, 1, 3.0f);
  const std::vector<float> dout = random_values(rows * width, 2);
  std::vector<float> out(rows * width, NAN), dgu(rows * 2 * width, NAN);
  kernels::host::swiglu_forward(gu.data(), out.data(), rows, width);
  kernels::host::swiglu_backward(dout.data(), gu.data(), dgu.data(), rows, width);
  const Tensor gate_up = tensor(gu, {rows, 2 * width});
  Tensor ref = Tensor::empty({rows, width}), dref = Tensor::empty({rows, 2 * width});
  ops::swiglu_forward(gate_up, ref);
  ops::swiglu_backward(tensor(dout, {rows, width}), gate_up, dref);
  // The CPU backend's sigmoid is its own fast exp: a few ulp apart, and the gate gradient's
  // 1 + g (1 - s) cancels near g = -1.28, so near zero the bound is absolute (1e-7).
  EXPECT_LT(max_relative(out, ref.span<float>(), 1e-6), 1e-5);
  EXPECT_LT(max_relative(dgu, dref.span<float>(), 1e-2), 1e-5);
}

TEST(KernelMath, AdamwMatchesTheCpuBackend) {
  constexpr int64_t n = 1001;
  const std::vector<float> g = random_values(n, 3), p0 = random_values(n, 4);
  std::vector<float> m = random_values(n, 5, 0.1f), v = random_values(n, 6, 0.1f);
  for (float& x : v) x = x * x;
  Tensor p_ref = tensor(p0, {n}), m_ref = tensor(m, {n}), v_ref = tensor(v, {n});
  std::vector<float> p = p0;
  for (int64_t step = 1; step <= 3; ++step) {
    kernels::host::adamw(p.data(), g.data(), m.data(), v.data(), n,
                         kernels::adamw_scalars(double{1e-3f}, 0.9f, 0.95f, 1e-8f, 0.1f, step));
    ops::adamw(p_ref, tensor(g, {n}), m_ref, v_ref, {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
  }
  // Explicit fmaf in the shared math against the CPU's a * b + c: 1-2 ulp per step.
  EXPECT_LT(max_relative(m, m_ref.span<float>(), 1e-6), 1e-5);
  EXPECT_LT(max_relative(v, v_ref.span<float>(), 1e-9), 1e-5);
  EXPECT_LT(max_relative(p, p_ref.span<float>(), 1e-6), 1e-5);
}

// A block of 50 columns holding ids 10..54 of a vocabulary of 55 plus 5 padding columns;
// targets inside and outside the block.
TEST(KernelMath, CrossEntropyPiecesMatchTheCpuBackend) {
  constexpr int64_t rows = 37, cols = 50;
  const kernels::VocabBlock v{cols, 10, 45};
  const std::vector<float> z0 = random_values(rows * cols, 13, 3.0f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 7) % 55);
  const Tensor ids = ops::from_host(std::span<const int32_t>(targets));
  const ops::VocabShard shard{v.first, v.valid, 55};
  std::vector<float> stats(rows * 3, NAN);
  kernels::host::ce_shard_stats(z0.data(), targets.data(), rows, v, stats.data());
  Tensor ref = Tensor::empty({rows, 3});
  ops::ce_shard_stats(tensor(z0, {rows, cols}), ids, shard, ref);
  // The CPU backend's exp is its own fast one.
  EXPECT_LT(max_relative(stats, ref.span<float>(), 1e-6), 1e-5);
  std::vector<float> lse(rows);
  for (int64_t r = 0; r < rows; ++r) lse[r] = stats[r * 3] + std::log(stats[r * 3 + 1]);
  std::vector<float> z = z0;
  kernels::host::ce_shard_backward(z.data(), targets.data(), rows, v, lse.data(), 0.25f);
  Tensor dref = tensor(z0, {rows, cols});
  ops::ce_shard_backward(dref, ids, shard, tensor(lse, {rows}), 0.25f);
  EXPECT_LT(max_relative(z, dref.span<float>(), 1e-6), 1e-5);
}

TEST(KernelMath, RopeMatchesTheCpuBackendBitwise) {
  constexpr int64_t batch = 2, seq = 7, heads = 3, head_dim = 12;
  Tensor cos = Tensor::empty({seq, head_dim / 2}), sin = Tensor::empty({seq, head_dim / 2});
  test::plain_rope_tables(head_dim, 10000.0f, cos, sin);
  const std::vector<float> x0 = random_values(batch * seq * heads * head_dim, 11);
  for (const bool interleaved : {false, true})
    for (const bool inverse : {false, true}) {
      std::vector<float> x = x0;
      kernels::host::rope(
          x.data(), cos.data<float>(), sin.data<float>(), batch,
          {seq, heads, head_dim, head_dim / 2, interleaved, inverse ? -1.0f : 1.0f});
      Tensor ref = tensor(x0, {batch, seq, heads, head_dim});
      ops::rope(ref, cos, sin,
                interleaved ? ops::RopeStyle::interleaved : ops::RopeStyle::rotate_half, inverse);
      EXPECT_EQ(x, std::vector<float>(ref.span<float>().begin(), ref.span<float>().end()))
          << (interleaved ? "interleaved" : "rotate-half") << (inverse ? ", inverse" : "");
    }
}

TEST(KernelMath, RmsnormMatchesTheCpuBackend) {
  for (const int64_t cols : {int64_t{1}, int64_t{31}, int64_t{32}, int64_t{257}}) {
    constexpr int64_t rows = 19;
    const std::vector<float> x = random_values(rows * cols, 7, 2.0f), w = random_values(cols, 8);
    std::vector<float> y(rows * cols, NAN), rstd(rows, NAN);
    kernels::host::rmsnorm_forward(x.data(), w.data(), 1e-6f, y.data(), rstd.data(), rows, cols);
    Tensor y_ref = Tensor::empty({rows, cols}), rstd_ref = Tensor::empty({rows});
    ops::rmsnorm_forward(tensor(x, {rows, cols}), tensor(w, {cols}), 1e-6f, y_ref, rstd_ref);
    // The butterfly sums in another order than the CPU's vector reduction.
    EXPECT_LT(max_relative(rstd, rstd_ref.span<float>(), 0), 1e-6) << cols << " columns";
    EXPECT_LT(max_relative(y, y_ref.span<float>(), 1e-6), 1e-5) << cols << " columns";
  }
}

Tensor ints(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::i32);
  std::copy(v.begin(), v.end(), t.span<int32_t>().begin());
  return t;
}

std::vector<float> values_of(const Tensor& t) {
  return {t.span<float>().begin(), t.span<float>().end()};
}

TEST(KernelMath, RmsnormBackwardMatchesTheCpuBackend) {
  // Three parts of the weight gradient's sum (64 rows each), the last one short.
  for (const int64_t cols : {int64_t{1}, int64_t{33}, int64_t{257}})
    for (const bool accumulate : {false, true}) {
      constexpr int64_t rows = 150;
      const std::vector<float> x = random_values(rows * cols, 26, 2.0f),
                               w = random_values(cols, 27);
      const std::vector<float> dy = random_values(rows * cols, 28);
      const std::vector<float> dx0 = random_values(rows * cols, 29), dw0 = random_values(cols, 30);
      std::vector<float> y(rows * cols), rstd(rows);
      kernels::host::rmsnorm_forward(x.data(), w.data(), 1e-6f, y.data(), rstd.data(), rows, cols);
      std::vector<float> dx = accumulate ? dx0 : std::vector<float>(rows * cols, NAN), dw = dw0;
      kernels::host::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(),
                                      dw.data(), accumulate, rows, cols);
      Tensor dx_ref = accumulate ? tensor(dx0, {rows, cols}) : Tensor::empty({rows, cols});
      Tensor dw_ref = tensor(dw0, {cols});
      ops::rmsnorm_backward(tensor(dy, {rows, cols}), tensor(x, {rows, cols}), tensor(w, {cols}),
                            tensor(rstd, {rows}), dx_ref, dw_ref, accumulate);
      // dx: the butterfly's sum against the CPU's vector reduction, in a difference that cancels
      // (so against the largest entry). dw: the same parts, summed in the same order with the
      // same fmaf, so bit for bit.
      EXPECT_LT(test::relative_to_largest(dx, dx_ref.span<float>()), 1e-6) << cols << " columns";
      EXPECT_EQ(dw, values_of(dw_ref)) << cols << " columns";
    }
}

// The router's backward, sigmoid and softmax, normalised gates or not, on a forward's real
// choices: the shared math's explicit fmaf is what g++ contracts the CPU's loops to.
TEST(KernelMath, RouterBackwardMatchesTheCpuBackend) {
  constexpr int64_t tokens = 37, experts = 16;
  for (const bool softmax : {false, true})
    for (const bool norm : {false, true}) {
      const kernels::RouterShape r{experts, 4, 4, 2, softmax, norm, 2.5f};
      const ops::RouterConfig cfg{
          experts, 4, 4, 2, softmax ? ops::Scoring::softmax : ops::Scoring::sigmoid, norm, 2.5f};
      const std::vector<float> logits = random_values(tokens * experts, 42, 2.0f);
      const std::vector<float> bias = random_values(experts, 43, 0.1f);
      const auto [scores, gates, idx, counts] = test::route_on_host(r, tokens, logits, bias);
      const std::vector<float> dgates = random_values(tokens * r.k, 44);
      const std::vector<float> ds0 = random_values(tokens * experts, 45),
                               du0 = random_values(tokens * experts, 46);
      std::vector<float> ds = ds0, du = du0;
      kernels::host::router_backward(r, tokens, dgates.data(), scores.data(), idx.data(), ds.data(),
                                     du.data());
      Tensor ds_ref = tensor(ds0, {tokens, experts}), du_ref = tensor(du0, {tokens, experts});
      ops::router_backward(tensor(dgates, {tokens, r.k}), tensor(scores, {tokens, experts}),
                           ints(idx).reshape({tokens, r.k}), cfg, ds_ref, du_ref);
      EXPECT_LT(test::relative_to_largest(ds, ds_ref.span<float>()), 1e-6)
          << "softmax " << softmax << ", norm " << norm;
      EXPECT_LT(test::relative_to_largest(du, du_ref.span<float>()), 1e-6)
          << "softmax " << softmax << ", norm " << norm;
    }
}

// The dispatch plan by sorts (core/kernels/dispatch.h) against the CPU backend's counting: the
// same permutation exactly, without a capacity and with one that drops, scores quantised so
// that ties decide between tokens.
TEST(KernelMath, DispatchPlanMatchesTheCpuBackendExactly) {
  constexpr int64_t tokens = 61, k = 3, experts = 8;
  const kernels::RouterShape r{experts, k, 1, 1, false, true, 1.0f};
  std::vector<float> logits = random_values(tokens * experts, 51);
  for (float& x : logits) x = std::round(x * 4.0f) / 4.0f;  // ties among the scores
  const std::vector<float> bias(experts, 0.0f);
  const test::Routed routed = test::route_on_host(r, tokens, logits, bias);
  const std::vector<float>& scores = routed.scores;
  const std::vector<int32_t>& idx = routed.idx;
  for (const int64_t capacity : {int64_t{0}, int64_t{30}, int64_t{12}}) {
    std::vector<int64_t> counts(experts), offsets(experts + 1);
    std::vector<int32_t> row_token(tokens * k, -7), slot_row(tokens * k);
    int64_t rows = -1, dropped = -1;
    kernels::host::plan_dispatch(idx.data(), scores.data(), tokens, k, experts, capacity,
                                 counts.data(), offsets.data(), row_token.data(), slot_row.data(),
                                 &rows, &dropped);
    ops::DispatchPlan plan = ops::make_dispatch_plan(tokens, k, experts);
    ops::plan_dispatch(ints(idx).reshape({tokens, k}), tensor(scores, {tokens, experts}), capacity,
                       plan);
    const auto i64 = [](const Tensor& t) {
      return std::vector<int64_t>(t.span<int64_t>().begin(), t.span<int64_t>().end());
    };
    const auto i32 = [](const Tensor& t) {
      return std::vector<int32_t>(t.span<int32_t>().begin(), t.span<int32_t>().end());
    };
    EXPECT_EQ(counts, i64(plan.counts)) << "capacity " << capacity;
    EXPECT_EQ(offsets, i64(plan.offsets)) << "capacity " << capacity;
    EXPECT_EQ(slot_row, i32(plan.slot_row)) << "capacity " << capacity;
    EXPECT_EQ(std::vector<int32_t>(row_token.begin(), row_token.begin() + rows),
              i32(plan.row_tokens()))
        << "capacity " << capacity;
    EXPECT_EQ(rows, plan.rows) << "capacity " << capacity;
    EXPECT_EQ(dropped, plan.dropped) << "capacity " << capacity;
    if (capacity == 12) {
      EXPECT_GT(dropped, 0);  // the capacity did drop
    }
  }
}

// The elementwise and copy ops, the head maximum and the bias update: exact index paths, and
// axpy's fmaf as the CPU's vectorised y += a * x.
TEST(KernelMath, CopiesMatchTheCpuBackendBitwise) {
  constexpr int64_t n = 7, heads = 3, da = 5, db = 4;
  const std::vector<float> a = random_values(n * heads * da, 53), x = random_values(n * 11, 54);
  const std::vector<float> y0 = random_values(n * 11, 55);
  {
    std::vector<float> f(x.size()), sum(x.size()), y = y0, sc = x;
    kernels::host::fill(f.data(), n * 11, 0.375f);
    kernels::host::add(x.data(), y0.data(), sum.data(), n * 11);
    kernels::host::axpy(-0.3f, x.data(), y.data(), n * 11);
    kernels::host::scale(sc.data(), n * 11, 1.7f);
    Tensor f_ref = Tensor::empty({n, 11}), sum_ref = Tensor::empty({n, 11});
    Tensor y_ref = tensor(y0, {n, 11}), sc_ref = tensor(x, {n, 11});
    ops::fill(f_ref, 0.375f);
    ops::add(tensor(x, {n, 11}), tensor(y0, {n, 11}), sum_ref);
    ops::axpy(-0.3f, tensor(x, {n, 11}), y_ref);
    ops::scale(sc_ref, 1.7f);
    EXPECT_EQ(f, values_of(f_ref));
    EXPECT_EQ(sum, values_of(sum_ref));
    EXPECT_EQ(y, values_of(y_ref));
    EXPECT_EQ(sc, values_of(sc_ref));
  }
  {
    // concat_cols of [n, 4] and [n, 7] as two block copies into [n, 11], and back.
    std::vector<float> cat(n * 11, NAN), left(n * 4), right(n * 7);
    kernels::host::copy_block(x.data(), 4, cat.data(), 11, n, 4);
    kernels::host::copy_block(y0.data(), 7, cat.data() + 4, 11, n, 7);
    kernels::host::copy_block(cat.data(), 11, left.data(), 4, n, 4);
    kernels::host::copy_block(cat.data() + 4, 11, right.data(), 7, n, 7);
    const Tensor srcs[] = {tensor(std::vector<float>(x.begin(), x.begin() + n * 4), {n, 4}),
                           tensor(std::vector<float>(y0.begin(), y0.begin() + n * 7), {n, 7})};
    Tensor cat_ref = Tensor::empty({n, 11});
    ops::concat_cols(srcs, cat_ref);
    EXPECT_EQ(cat, values_of(cat_ref));
    Tensor parts[] = {Tensor::empty({n, 4}), Tensor::empty({n, 7})};
    ops::split_cols(cat_ref, parts);
    EXPECT_EQ(left, values_of(parts[0]));
    EXPECT_EQ(right, values_of(parts[1]));
  }
  for (const bool broadcast : {false, true}) {
    const int64_t b_heads = broadcast ? 1 : heads;
    const std::vector<float> b = random_values(n * b_heads * db, 56);
    std::vector<float> cat(n * heads * (da + db)), a2(a.size(), NAN), b2(b.size(), NAN);
    kernels::host::concat_heads(a.data(), b.data(), cat.data(), n, heads, da, db, broadcast);
    const std::vector<float> grad = random_values(cat.size(), 57);
    kernels::host::split_heads(grad.data(), a2.data(), b2.data(), n, heads, da, db, broadcast);
    Tensor cat_ref = Tensor::empty({n, heads, da + db});
    ops::concat_heads(tensor(a, {n, heads, da}), tensor(b, {n, b_heads, db}), cat_ref);
    EXPECT_EQ(cat, values_of(cat_ref)) << "broadcast " << broadcast;
    Tensor a_ref = Tensor::empty({n, heads, da}), b_ref = Tensor::empty({n, b_heads, db});
    ops::split_heads(tensor(grad, {n, heads, da + db}), a_ref, b_ref);
    EXPECT_EQ(a2, values_of(a_ref)) << "broadcast " << broadcast;
    EXPECT_EQ(b2, values_of(b_ref)) << "broadcast " << broadcast;
  }
  {
    std::vector<float> t(a.size());
    kernels::host::transpose01(a.data(), n, heads, da, t.data());
    Tensor t_ref = Tensor::empty({heads, n, da});
    ops::transpose01(tensor(a, {n, heads, da}), t_ref);
    EXPECT_EQ(t, values_of(t_ref));
  }
  {
    const std::vector<float> row_max = random_values(2 * heads * 9, 58, 5.0f);
    std::vector<float> acc{0.5f, 9.0f, -1.0f};  // one head's earlier maximum stays
    Tensor acc_ref = tensor(acc, {heads});
    kernels::host::head_max(row_max.data(), 2, heads, 9, acc.data());
    ops::head_max(tensor(row_max, {2, heads, 9}), acc_ref);
    EXPECT_EQ(acc, values_of(acc_ref));
  }
  {
    const std::vector<int64_t> counts{5, 9, 7, 7, 0, 14};  // mean 7: below, above and equal
    std::vector<float> bias = random_values(6, 59);
    Tensor bias_ref = tensor(bias, {6}), counts_t = Tensor::empty({6}, DType::i64);
    std::copy(counts.begin(), counts.end(), counts_t.span<int64_t>().begin());
    kernels::host::balance_bias_update(bias.data(), counts.data(), 6, 1e-3f);
    ops::balance_bias_update(bias_ref, counts_t, 1e-3f);
    EXPECT_EQ(bias, values_of(bias_ref));
  }
}

// The sigmoid gates, per element and per row (the CPU's sigmoid is its own fast exp: a few ulp),
// and the cross-entropy's combine of the shards' stats (the same double ops in the same order).
TEST(KernelMath, SigmoidGatesAndTheCrossEntropyCombineMatchTheCpuBackend) {
  constexpr int64_t rows = 13, cols = 21;
  for (const int64_t width : {cols, int64_t{1}}) {
    const std::vector<float> x = random_values(rows * cols, 65),
                             g = random_values(rows * width, 66);
    const std::vector<float> dy = random_values(rows * cols, 67);
    std::vector<float> y(rows * cols), dx(rows * cols), dg(rows * width);
    kernels::host::sigmoid_gate(x.data(), g.data(), y.data(), rows, cols, width);
    kernels::host::sigmoid_gate_backward(dy.data(), x.data(), g.data(), dx.data(), dg.data(), rows,
                                         cols, width);
    Tensor y_ref = Tensor::empty({rows, cols}), dx_ref = Tensor::empty({rows, cols}),
           dg_ref = Tensor::empty({rows, width});
    ops::sigmoid_gate(tensor(x, {rows, cols}), tensor(g, {rows, width}), y_ref);
    ops::sigmoid_gate_backward(tensor(dy, {rows, cols}), tensor(x, {rows, cols}),
                               tensor(g, {rows, width}), dx_ref, dg_ref);
    EXPECT_LT(max_relative(y, y_ref.span<float>(), 1e-6), 1e-5) << "width " << width;
    EXPECT_LT(max_relative(dx, dx_ref.span<float>(), 1e-6), 1e-5) << "width " << width;
    EXPECT_LT(test::relative_to_largest(dg, dg_ref.span<float>()), 1e-5) << "width " << width;
  }
  // Three shards of 11 rows; one shard of row 4 has no columns (sum 0).
  constexpr int64_t parts = 3, n = 11;
  std::vector<float> stats(parts * n * 3);
  const std::vector<float> v = random_values(stats.size(), 68, 3.0f);
  for (int64_t i = 0; i < parts * n; ++i) {
    stats[i * 3] = v[i * 3];
    stats[i * 3 + 1] = std::abs(v[i * 3 + 1]) + 0.5f;
    stats[i * 3 + 2] = i % 3 == 0 ? v[i * 3 + 2] : 0.0f;
  }
  stats[(1 * n + 4) * 3 + 1] = 0.0f;
  std::vector<float> lse(n);
  std::vector<double> row_loss(n);
  double loss = 0.25;
  kernels::host::ce_combine_stats(stats.data(), parts, n, lse.data(), &loss, row_loss.data());
  Tensor lse_ref = Tensor::empty({n}), loss_ref = Tensor::zeros({1}, DType::f64);
  loss_ref.data<double>()[0] = 0.25;
  ops::ce_combine_stats(tensor(stats, {parts * n * 3}), lse_ref, loss_ref);
  EXPECT_EQ(lse, values_of(lse_ref));
  EXPECT_EQ(loss, loss_ref.data<double>()[0]);
}

// The balancing losses in phases (core/kernels/balance.h) against the CPU backend's serial loop:
// sigmoid and softmax scores, every loss on, gradients and sums.
TEST(KernelMath, BalanceLossesMatchTheCpuBackend) {
  constexpr int64_t batch = 3, seq = 17, tokens = batch * seq, experts = 12, k = 3;
  for (const bool softmax : {false, true}) {
    const kernels::RouterShape r{experts, k, 4, 2, softmax, true, 1.0f};
    const std::vector<float> logits = random_values(tokens * experts, 73, 2.0f);
    const std::vector<float> bias = random_values(experts, 74, 0.1f);
    const auto [scores, gates, idx, counts] = test::route_on_host(r, tokens, logits, bias);
    const kernels::BalanceShape b{tokens, experts, k, batch, seq, 1e-3f, 1e-2f, 1e-3f};
    std::vector<float> ds(tokens * experts, NAN), du(tokens * experts, NAN);
    std::vector<uint8_t> scratch(kernels::balance_scratch_bytes(b));
    double sums[4];
    kernels::host::balance_losses(b, logits.data(), scores.data(), counts.data(), 0.5f, ds.data(),
                                  du.data(), sums, scratch.data());
    const ops::RouterConfig rc{
        experts, k, 4, 2, softmax ? ops::Scoring::softmax : ops::Scoring::sigmoid, true, 1.0f};
    const ops::BalanceConfig bc{1e-3f, 1e-2f, 1e-3f, batch, seq};
    Tensor counts_t = Tensor::empty({experts}, DType::i64);
    std::copy(counts.begin(), counts.end(), counts_t.span<int64_t>().begin());
    Tensor ds_ref = Tensor::empty({tokens, experts}), du_ref = Tensor::empty({tokens, experts});
    Tensor sums_ref = Tensor::zeros({ops::kBalanceSums}, DType::f64);
    ops::balance_losses(tensor(logits, {tokens, experts}), tensor(scores, {tokens, experts}),
                        counts_t, rc, bc, 0.5f, &ds_ref, &du_ref, &sums_ref);
    EXPECT_LT(test::relative_to_largest(ds, ds_ref.span<float>()), 1e-6) << softmax;
    EXPECT_LT(test::relative_to_largest(du, du_ref.span<float>()), 1e-6) << softmax;
    for (int64_t i = 0; i < ops::kBalanceSums; ++i)
      EXPECT_NEAR(sums[i], sums_ref.data<double>()[i], 1e-12 * std::abs(sums_ref.data<double>()[i]))
          << "sum " << i << ", softmax " << softmax;
  }
}

TEST(KernelMath, SumOfSquaresIsTheCpuBackendsBitwise) {
  for (const int64_t n : {int64_t{1}, int64_t{4096}, int64_t{3 * 4096 + 17}}) {
    const std::vector<float> x = random_values(n, 47, 3.0f);
    double sum = 0.5;
    kernels::host::sum_squares(x.data(), n, &sum);
    Tensor ref = Tensor::zeros({1}, DType::f64);
    ref.data<double>()[0] = 0.5;
    ops::sum_squares(tensor(x, {n}), ref);
    EXPECT_EQ(sum, ref.data<double>()[0]) << n;
  }
}

TEST(KernelMath, EmbeddingBackwardMatchesTheCpuBackendBitwise) {
  // Repeated ids (the sum's order matters), ids of other blocks, this block [40, 70) of 100.
  constexpr int64_t n = 301, dim = 21;
  const ops::VocabShard shard{40, 30, 100};
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * i * 7 + 3) % 100);
  const std::vector<float> dout = random_values(n * dim, 31), table0 = random_values(30 * dim, 32);
  std::vector<float> dtable = table0;
  kernels::host::embedding_backward(ids.data(), n, dout.data(), dim, dtable.data(), shard.first,
                                    shard.valid);
  Tensor ref = tensor(table0, {shard.valid, dim});
  ops::embedding_backward(ints(ids), tensor(dout, {n, dim}), ref, shard);
  EXPECT_EQ(dtable, values_of(ref));
}

// The MoE dispatch's row moves: slots with and without a row, weights and none, accumulate or
// not. Index paths exactly; the combine's fmaf is what the CPU's vectorised a += w * s contracts
// to, so it is exact too (on a machine with FMA, as -march=native builds for); the backward's
// dot is a butterfly against the CPU's vector reduction.
TEST(KernelMath, DispatchRowMovesMatchTheCpuBackend) {
  constexpr int64_t tokens = 23, k = 3, dim = 45, rows = tokens * k;
  const std::vector<float> src = random_values(rows * dim, 20),
                           dy = random_values(tokens * dim, 21);
  const std::vector<float> weights = random_values(tokens * k, 22),
                           acc = random_values(tokens * dim, 23);
  const std::vector<int32_t> slot_row = test::scrambled_slots(tokens * k, 40);
  std::vector<int32_t> row_token(rows);
  for (int64_t r = 0; r < rows; ++r) row_token[r] = static_cast<int32_t>((r * 5) % tokens);

  std::vector<float> gathered(rows * dim, NAN);
  kernels::host::gather_rows(src.data(), row_token.data(), rows, dim, gathered.data());
  Tensor g_ref = Tensor::empty({rows, dim});
  ops::gather_rows(tensor(src, {rows, dim}), ints(row_token), g_ref);
  EXPECT_EQ(gathered, values_of(g_ref));

  for (const bool weighted : {false, true})
    for (const bool accumulate : {false, true}) {
      std::vector<float> combined = accumulate ? acc : std::vector<float>(tokens * dim, NAN);
      kernels::host::combine_rows(src.data(), slot_row.data(), weighted ? weights.data() : nullptr,
                                  tokens, k, dim, combined.data(), accumulate);
      Tensor c_ref = accumulate ? tensor(acc, {tokens, dim}) : Tensor::empty({tokens, dim});
      ops::combine_rows(tensor(src, {rows, dim}), ints(slot_row),
                        weighted ? tensor(weights, {tokens * k}) : Tensor(), k, c_ref, accumulate);
      EXPECT_EQ(combined, values_of(c_ref))
          << "weighted " << weighted << ", accumulate " << accumulate;
    }

  // Rows no slot reads keep what they held: start both from the same values.
  std::vector<float> dsrc = acc, dweights(tokens * k, NAN);
  dsrc.resize(rows * dim, 0.5f);
  kernels::host::combine_rows_backward(dy.data(), src.data(), slot_row.data(), weights.data(),
                                       tokens, k, dim, dsrc.data(), dweights.data());
  std::vector<float> dsrc0 = acc;
  dsrc0.resize(rows * dim, 0.5f);
  Tensor ds_ref = tensor(dsrc0, {rows, dim}), dw_ref = Tensor::empty({tokens * k});
  ops::combine_rows_backward(tensor(dy, {tokens, dim}), tensor(src, {rows, dim}), ints(slot_row),
                             tensor(weights, {tokens * k}), k, ds_ref, dw_ref);
  EXPECT_EQ(dsrc, values_of(ds_ref));
  EXPECT_LT(test::relative_to_largest(dweights, dw_ref.span<float>()), 1e-6);
}

TEST(KernelMath, EmbeddingRowsAndBf16CastsMatchTheCpuBackendBitwise) {
  // This rank's block [40, 70) of a 100-token vocabulary; ids inside and outside it.
  constexpr int64_t n = 31, dim = 19;
  const ops::VocabShard shard{40, 30, 100};
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 13) % 100);
  const std::vector<float> table = random_values(shard.valid * dim, 24);
  std::vector<float> out(n * dim, NAN);
  kernels::host::embedding_forward(ids.data(), n, table.data(), shard.first, shard.valid, dim,
                                   out.data());
  Tensor ref = Tensor::empty({n, dim});
  ops::embedding_forward(ints(ids), tensor(table, {shard.valid, dim}), ref, shard);
  EXPECT_EQ(out, values_of(ref));

  // Ties to even, the largest finite values, infinities, NaN and denormals among the values.
  std::vector<float> x = random_values(999, 25, 100.0f);
  for (const uint32_t bits : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u,
                              0xff800000u, 0x7fc00001u, 0xffa00000u, 0x00000001u, 0x807fffffu})
    x.push_back(std::bit_cast<float>(bits));
  const auto nx = static_cast<int64_t>(x.size());
  std::vector<uint16_t> words(x.size());
  kernels::host::to_bf16(x.data(), words.data(), nx);
  Tensor w_ref = Tensor::empty({nx}, DType::bf16);
  ops::cast(tensor(x, {nx}), w_ref);
  const auto* ref_words = static_cast<const uint16_t*>(w_ref.raw_data());
  EXPECT_EQ(words, std::vector<uint16_t>(ref_words, ref_words + nx));
  std::vector<float> back(x.size());
  kernels::host::from_bf16(words.data(), back.data(), nx);
  Tensor back_ref = Tensor::empty({nx});
  ops::cast(w_ref, back_ref);
  for (int64_t i = 0; i < nx; ++i)
    EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(back_ref.span<float>()[i]))
        << i;
}

// The column-major GEMM plans the CUDA backend hands to cuBLAS(Lt), executed by the host
// reference under cuBLAS's rules, against the CPU backend's row-major products: every
// transpose combination, non-square shapes, alpha and beta.
TEST(GemmPlan, ColumnMajorPlansGiveTheRowMajorProducts) {
  constexpr int64_t M = 7, K = 5, N = 3;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
      const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
      const std::vector<float> a = random_values(a_rows * a_cols, 20);
      const std::vector<float> b = random_values(b_rows * b_cols, 21);
      const std::vector<float> c0 = random_values(M * N, 22);
      const kernels::GemmPlan p =
          kernels::plan_matmul(a_rows, a_cols, ta, b_rows, b_cols, tb, 0.5f, 2.0f);
      std::vector<float> c = c0;
      kernels::host_gemm(p, b.data(), a.data(), c.data());
      Tensor ref = tensor(c0, {M, N});
      ops::matmul(tensor(a, {a_rows, a_cols}), ta, tensor(b, {b_rows, b_cols}), tb, ref, 0.5f,
                  2.0f);
      EXPECT_LT(max_relative(c, ref.span<float>(), 1e-3), 1e-5) << "ta " << ta << " tb " << tb;
    }
}

TEST(GemmPlan, GroupedPlansGiveTheGroupedProduct) {
  constexpr int64_t in = 6, out = 4;
  const std::vector<int64_t> offsets{0, 3, 3, 8, 9, 9};  // experts 1 and 4 receive no rows
  const int64_t rows = offsets.back();
  const std::vector<float> x = random_values(rows * in, 23);
  std::vector<Tensor> w;
  for (size_t e = 0; e + 1 < offsets.size(); ++e)
    w.push_back(tensor(random_values(out * in, 24 + static_cast<uint32_t>(e)), {out, in}));
  const kernels::GroupedGemm g = kernels::plan_grouped(offsets, in, out);
  EXPECT_EQ(g.experts, (std::vector<int64_t>{0, 2, 3}));
  std::vector<float> y(rows * out, NAN);
  for (size_t i = 0; i < g.plans.size(); ++i)
    kernels::host_gemm(g.plans[i], w[static_cast<size_t>(g.experts[i])].data<float>(),
                       x.data() + g.x_offsets[i], y.data() + g.y_offsets[i]);
  Tensor ref = Tensor::empty({rows, out});
  ops::grouped_matmul(tensor(x, {rows, in}), w, ops::from_host(std::span<const int64_t>(offsets)),
                      ref);
  EXPECT_LT(max_relative(y, ref.span<float>(), 1e-3), 1e-5);
}

}  // namespace
}  // namespace moetron
