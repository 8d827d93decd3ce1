#include "tests/gpu/kernel_checks.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <utility>

#include "core/cuda/blas_lt.h"
#include "core/cuda/device.h"
#include "core/cuda/kernels.h"
#include "core/kernels/gemm_plan.h"
#include "core/kernels/host.h"
#include "tests/bf16_values.h"
#include "tests/compare.h"
#include "tests/random_values.h"
#include "tests/routed.h"

namespace moetron::gpu {
namespace {

using test::random_values;

// Relative to the reference, absolute (1e-30) only at exact zeros.
double max_relative(const std::vector<float>& got, const std::vector<float>& want,
                    double floor = 1e-30) {
  return test::max_relative(got, want, floor);
}

// cuBLASLt run from the plans of core/kernels/gemm_plan.h against the host GEMM of the same
// plans (double accumulation; GemmPlan.* holds that to the CPU backend's matmul): every
// transpose pair, alpha and beta, fp32 and bf16 operands (on the bf16 grid, so both sides
// multiply the same numbers and only the fp32 accumulation differs), and the grouped expert
// GEMM with an expert that has no rows.
void gemm_checks(std::vector<KernelCheck>& out) {
  const cuda::BlasLt blas;
  const int64_t M = 37, N = 53, K = 71;
  double worst[2] = {0, 0};
  uint32_t seed = 30;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{0.5f, 1.5f}})
        for (const cuda::GemmOperands ops : {cuda::GemmOperands::f32, cuda::GemmOperands::bf16}) {
          const bool bf16 = ops == cuda::GemmOperands::bf16;
          const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
          const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
          std::vector<float> a = random_values(a_rows * a_cols, ++seed);
          std::vector<float> b = random_values(b_rows * b_cols, ++seed);
          if (bf16) a = test::on_bf16_grid(a), b = test::on_bf16_grid(b);
          std::vector<float> c = random_values(M * N, ++seed);
          const kernels::GemmPlan p =
              kernels::plan_matmul(a_rows, a_cols, ta, b_rows, b_cols, tb, alpha, beta);
          cuda::DeviceFloats d_c(c);
          kernels::host_gemm(p, b.data(), a.data(), c.data());
          if (bf16) {
            cuda::DeviceArray<uint16_t> d_a(test::bf16_words(a)), d_b(test::bf16_words(b));
            blas.gemm(p, ops, d_b.get(), d_a.get(), d_c.get());
          } else {
            cuda::DeviceFloats d_a(a), d_b(b);
            blas.gemm(p, ops, d_b.get(), d_a.get(), d_c.get());
          }
          worst[bf16] = std::max(worst[bf16], test::relative_to_largest(d_c.to_host(), c));
        }
  out.push_back({"cublaslt gemm fp32", worst[0], 1e-5});
  out.push_back({"cublaslt gemm bf16", worst[1], 1e-5});

  const std::vector<int64_t> offsets{0, 5, 5, 17, 40};  // expert 1 has no rows
  const int64_t in = 24, width = 40, rows = offsets.back();
  const kernels::GroupedGemm g = kernels::plan_grouped(offsets, in, width);
  const std::vector<float> x = random_values(rows * in, ++seed);
  std::vector<float> y(rows * width, 0.0f);
  std::vector<std::vector<float>> w;
  std::vector<std::unique_ptr<cuda::DeviceFloats>> d_w;
  std::vector<const void*> w_ptrs;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    w.push_back(random_values(width * in, ++seed));
    d_w.push_back(std::make_unique<cuda::DeviceFloats>(std::span<const float>(w.back())));
    w_ptrs.push_back(d_w.back()->get());
  }
  for (size_t i = 0; i < g.plans.size(); ++i)
    kernels::host_gemm(g.plans[i], w[g.experts[i]].data(), x.data() + g.x_offsets[i],
                       y.data() + g.y_offsets[i]);
  cuda::DeviceFloats d_x(x), d_y(y.size());
  blas.grouped(g, cuda::GemmOperands::f32, d_x.get(), w_ptrs.data(), d_y.get());
  out.push_back({"cublaslt grouped fp32", test::relative_to_largest(d_y.to_host(), y), 1e-5});
}

}  // namespace

std::vector<KernelCheck> run_kernel_checks(int scale, bool gemms) {
  std::vector<KernelCheck> out;
  if (gemms) gemm_checks(out);
  {
    const int64_t rows = 301 / scale + 1, width = 77;
    const std::vector<float> gu = random_values(rows * 2 * width, 1, 3.0f);
    const std::vector<float> dout = random_values(rows * width, 2);
    std::vector<float> y(rows * width), dgu(rows * 2 * width);
    kernels::host::swiglu_forward(gu.data(), y.data(), rows, width);
    kernels::host::swiglu_backward(dout.data(), gu.data(), dgu.data(), rows, width);
    cuda::DeviceFloats d_gu(gu), d_dout(dout), d_y(y.size()), d_dgu(dgu.size());
    cuda::swiglu_forward(d_gu.get(), d_y.get(), rows, width);
    cuda::swiglu_backward(d_dout.get(), d_gu.get(), d_dgu.get(), rows, width);
    // The device's expf is an ulp or two from glibc's; the gate gradient's 1 + g (1 - s)
    // cancels near g = -1.28, so there the bound is absolute (1e-7).
    out.push_back({"swiglu_forward", max_relative(d_y.to_host(), y), 4e-7});
    out.push_back({"swiglu_backward", max_relative(d_dgu.to_host(), dgu, 0.1), 1e-6});
  }
  {
    const int64_t n = 100003 / scale;
    const std::vector<float> g = random_values(n, 3);
    std::vector<float> p = random_values(n, 4), m = random_values(n, 5, 0.1f), v(n, 0.01f);
    cuda::DeviceFloats dp(p), dg(g), dm(m), dv(v);
    for (int64_t step = 1; step <= 3; ++step) {
      const auto s = kernels::adamw_scalars(1e-3, 0.9f, 0.95f, 1e-8f, 0.1f, step);
      kernels::host::adamw(p.data(), g.data(), m.data(), v.data(), n, s);
      cuda::adamw(dp.get(), dg.get(), dm.get(), dv.get(), n, s);
    }
    const double worst = std::max({max_relative(dp.to_host(), p), max_relative(dm.to_host(), m),
                                   max_relative(dv.to_host(), v)});
    out.push_back({"adamw", worst, 0});
  }
  {
    // Tables made on the host (as training makes them), rotation on the device.
    const int64_t batch = 3, seq = 129 / scale + 1, heads = 5, head_dim = 64;
    std::vector<float> cos(seq * head_dim / 2), sin(seq * head_dim / 2);
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t j = 0; j < head_dim / 2; ++j) {
        const float angle = static_cast<float>(t) * std::pow(10000.0f, -2.0f * j / head_dim);
        cos[t * head_dim / 2 + j] = std::cos(angle);
        sin[t * head_dim / 2 + j] = std::sin(angle);
      }
    double worst = 0;
    for (const bool interleaved : {false, true}) {
      const kernels::RopeShape r{seq,          heads,       head_dim,
                                 head_dim / 2, interleaved, interleaved ? -1.0f : 1.0f};
      std::vector<float> x = random_values(batch * seq * heads * head_dim, 12);
      cuda::DeviceFloats dx(x), dcos(cos), dsin(sin);
      kernels::host::rope(x.data(), cos.data(), sin.data(), batch, r);
      cuda::rope(dx.get(), dcos.get(), dsin.get(), batch, r);
      worst = std::max(worst, max_relative(dx.to_host(), x));
    }
    out.push_back({"rope", worst, 0});
  }
  {
    // A vocabulary block with padding; targets inside and outside it.
    const int64_t rows = 1031 / scale + 1;
    const kernels::VocabBlock v{1000, 4000, 997};
    const std::vector<float> z = random_values(rows * v.cols, 13, 3.0f);
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>(3990 + (r * 37) % 1020);
    std::vector<float> stats(rows * 3), lse(rows), dz = z;
    kernels::host::ce_shard_stats(z.data(), targets.data(), rows, v, stats.data());
    for (int64_t r = 0; r < rows; ++r) lse[r] = stats[r * 3] + std::log(stats[r * 3 + 1]);
    kernels::host::ce_shard_backward(dz.data(), targets.data(), rows, v, lse.data(), 0.25f);
    cuda::DeviceFloats d_z(z), d_stats(stats.size()), d_lse(lse);
    cuda::DeviceArray<int32_t> d_targets(targets);
    cuda::ce_shard_stats(d_z.get(), d_targets.get(), rows, v, d_stats.get());
    out.push_back({"ce_shard_stats", max_relative(d_stats.to_host(), stats), 4e-7});
    cuda::ce_shard_backward(d_z.get(), d_targets.get(), rows, v, d_lse.get(), 0.25f);
    out.push_back({"ce_shard_backward", max_relative(d_z.to_host(), dz), 4e-7});
  }
  // Routing: the chosen experts exactly (an index differing is reported as infinitely off),
  // scores and gates within the device's expf. The device's expf may differ from the host's by
  // an ulp, which flips a choice between two near-equal scores: so each token's logits are the
  // 64 points of a grid 1/8 apart in a random order and the bias lies on a grid of 1/32, which
  // keeps the scores the choices compare far more than an ulp apart.
  for (const bool softmax : {false, true}) {
    const kernels::RouterShape r{64, 6, 8, 3, softmax, true, 2.5f};
    const int64_t tokens = 4099 / scale + 1;
    std::vector<float> logits(static_cast<size_t>(tokens * r.experts));
    std::mt19937 order(9);
    for (int64_t t = 0; t < tokens; ++t) {
      float* row = logits.data() + t * r.experts;
      for (int64_t e = 0; e < r.experts; ++e) row[e] = -4.0f + 0.125f * static_cast<float>(e);
      std::shuffle(row, row + r.experts, order);
    }
    std::vector<float> bias = random_values(r.experts, 10, 0.1f);
    for (float& b : bias) b = std::round(b * 32.0f) / 32.0f;
    std::vector<float> scores(tokens * r.experts), gates(tokens * r.k);
    std::vector<int32_t> idx(tokens * r.k);
    kernels::host::router_forward(r, tokens, logits.data(), bias.data(), scores.data(), idx.data(),
                                  gates.data());
    cuda::DeviceFloats d_logits(logits), d_bias(bias), d_scores(scores.size()),
        d_gates(gates.size());
    cuda::DeviceArray<int32_t> d_idx(idx.size());
    cuda::DeviceFloats scratch((cuda::router_scratch_bytes(r, tokens) + 3) / 4);
    cuda::router_forward(r, tokens, d_logits.get(), d_bias.get(), d_scores.get(), d_idx.get(),
                         d_gates.get(), scratch.get());
    const double off = d_idx.to_host() == idx ? 0.0 : INFINITY;
    out.push_back({std::string("router_forward ") + (softmax ? "softmax" : "sigmoid"),
                   std::max({off, max_relative(d_scores.to_host(), scores),
                             max_relative(d_gates.to_host(), gates)}),
                   1e-6});
    // The backward on the host's choices: explicit fmaf and IEEE division on both, bit for bit.
    const std::vector<float> dgates = random_values(tokens * r.k, 48);
    std::vector<float> ds = random_values(tokens * r.experts, 49), du = ds;
    cuda::DeviceFloats d_dg(dgates), d_s(scores), d_ds(ds), d_du(du);
    cuda::DeviceArray<int32_t> d_i(idx);
    kernels::host::router_backward(r, tokens, dgates.data(), scores.data(), idx.data(), ds.data(),
                                   du.data());
    cuda::router_backward(r, tokens, d_dg.get(), d_s.get(), d_i.get(), d_ds.get(), d_du.get());
    out.push_back({std::string("router_backward ") + (softmax ? "softmax" : "sigmoid"),
                   std::max(max_relative(d_ds.to_host(), ds), max_relative(d_du.to_host(), du)),
                   0});
  }
  {
    // The dispatch's row moves and the embedding: index paths and fmaf alike, so bit for bit.
    const int64_t tokens = 2053 / scale + 1, k = 6, dim = 96, rows = tokens * k;
    const std::vector<float> src = random_values(rows * dim, 14),
                             dy = random_values(tokens * dim, 15);
    const std::vector<float> weights = random_values(tokens * k, 16);
    const std::vector<int32_t> slot_row = test::scrambled_slots(tokens * k, 40);
    std::vector<int32_t> row_token(rows);
    for (int64_t r = 0; r < rows; ++r) row_token[r] = static_cast<int32_t>((r * 5) % tokens);
    std::vector<float> gathered(rows * dim), combined(tokens * dim), dsrc(rows * dim, 0.0f),
        dweights(tokens * k);
    // Rows of dropped slots are not written: both sides start from the same zeros.
    cuda::DeviceFloats d_ds(dsrc);
    kernels::host::gather_rows(src.data(), row_token.data(), rows, dim, gathered.data());
    kernels::host::combine_rows(src.data(), slot_row.data(), weights.data(), tokens, k, dim,
                                combined.data(), false);
    kernels::host::combine_rows_backward(dy.data(), src.data(), slot_row.data(), weights.data(),
                                         tokens, k, dim, dsrc.data(), dweights.data());
    cuda::DeviceFloats d_src(src), d_dy(dy), d_w(weights), d_g(gathered.size()),
        d_c(combined.size()), d_dw(dweights.size());
    cuda::DeviceArray<int32_t> d_slot(slot_row), d_rt(row_token);
    cuda::gather_rows(d_src.get(), d_rt.get(), rows, dim, d_g.get());
    cuda::combine_rows(d_src.get(), d_slot.get(), d_w.get(), tokens, k, dim, d_c.get(), false);
    cuda::combine_rows_backward(d_dy.get(), d_src.get(), d_slot.get(), d_w.get(), tokens, k, dim,
                                d_ds.get(), d_dw.get());
    out.push_back({"gather_rows", max_relative(d_g.to_host(), gathered), 0});
    out.push_back({"combine_rows", max_relative(d_c.to_host(), combined), 0});
    out.push_back(
        {"combine_rows_backward",
         std::max(max_relative(d_ds.to_host(), dsrc), max_relative(d_dw.to_host(), dweights)), 0});

    const int64_t first = 1000, block = 997;  // ids inside and outside this block
    std::vector<int32_t> ids(tokens);
    for (int64_t i = 0; i < tokens; ++i) ids[i] = static_cast<int32_t>((i * 37) % 4000);
    const std::vector<float> table = random_values(block * dim, 17);
    std::vector<float> emb(tokens * dim);
    kernels::host::embedding_forward(ids.data(), tokens, table.data(), first, block, dim,
                                     emb.data());
    cuda::DeviceArray<int32_t> d_ids(ids);
    cuda::DeviceFloats d_table(table), d_emb(emb.size());
    cuda::embedding_forward(d_ids.get(), tokens, d_table.get(), first, block, dim, d_emb.get());
    out.push_back({"embedding_forward", max_relative(d_emb.to_host(), emb), 0});

    // Casts: the values above at a wide range, plus ties, infinities, NaNs and denormals.
    std::vector<float> x = random_values(100003 / scale, 18, 1000.0f);
    for (const uint32_t bits : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                                0x7fc00001u, 0xffa00000u, 0x00000001u, 0x807fffffu})
      x.push_back(std::bit_cast<float>(bits));
    const auto n = static_cast<int64_t>(x.size());
    std::vector<uint16_t> words(x.size());
    std::vector<float> back(x.size());
    kernels::host::to_bf16(x.data(), words.data(), n);
    kernels::host::from_bf16(words.data(), back.data(), n);
    cuda::DeviceFloats d_x(x), d_back(back.size());
    cuda::DeviceArray<uint16_t> d_words(words.size());
    cuda::to_bf16(d_x.get(), d_words.get(), n);
    cuda::from_bf16(d_words.get(), d_back.get(), n);
    const std::vector<float> got_back = d_back.to_host();
    const bool same = d_words.to_host() == words &&
                      std::equal(back.begin(), back.end(), got_back.begin(), [](float a, float b) {
                        return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
                      });
    out.push_back({"bf16 casts", same ? 0.0 : INFINITY, 0});
  }
  for (const int64_t cols : {int64_t{1}, int64_t{31}, int64_t{257}, int64_t{4096}}) {
    // RMSNorm's backward: the same butterfly, fmaf and parts on both, so bit for bit.
    const int64_t rows = 1003 / scale + 1;
    const std::vector<float> x = random_values(rows * cols, 33, 2.0f), w = random_values(cols, 34);
    const std::vector<float> dy = random_values(rows * cols, 35), rstd = random_values(rows, 36);
    std::vector<float> dx(rows * cols), dw = random_values(cols, 37);
    cuda::DeviceFloats d_x(x), d_w(w), d_dy(dy), d_rstd(rstd), d_dx(dx.size()), d_dw(dw);
    cuda::DeviceFloats scratch((cuda::rmsnorm_backward_scratch_bytes(rows, cols) + 3) / 4);
    kernels::host::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(),
                                    dw.data(), false, rows, cols);
    cuda::rmsnorm_backward(d_dy.get(), d_x.get(), d_w.get(), d_rstd.get(), d_dx.get(), d_dw.get(),
                           false, rows, cols, scratch.get());
    out.push_back({"rmsnorm_backward cols " + std::to_string(cols),
                   std::max(max_relative(d_dx.to_host(), dx), max_relative(d_dw.to_host(), dw)),
                   0});
  }
  {
    // The dispatch plan: Thrust's stable sorts against std::stable_sort, the same permutation
    // exactly, without a capacity and with one that drops; scores quantised for ties.
    const int64_t tokens = 4099 / scale + 1, k = 6, experts = 64;
    const kernels::RouterShape r{experts, k, 8, 3, false, true, 2.5f};
    std::vector<float> logits = random_values(tokens * experts, 52, 2.0f);
    for (float& x : logits) x = std::round(x * 8.0f) / 8.0f;
    const std::vector<float> bias(experts, 0.0f);
    const test::Routed routed = test::route_on_host(r, tokens, logits, bias);
    const std::vector<float>& scores = routed.scores;
    const std::vector<int32_t>& idx = routed.idx;
    cuda::DeviceArray<int32_t> d_idx(idx);
    cuda::DeviceFloats d_scores(scores);
    for (const int64_t capacity : {int64_t{0}, tokens * k / experts}) {
      std::vector<int64_t> counts(experts), offsets(experts + 1);
      std::vector<int32_t> row_token(tokens * k, -1), slot_row(tokens * k);
      int64_t rows = 0, dropped = 0;
      cuda::DeviceArray<int32_t> d_row_token(row_token);  // rows past the kept ones stay -1
      kernels::host::plan_dispatch(idx.data(), scores.data(), tokens, k, experts, capacity,
                                   counts.data(), offsets.data(), row_token.data(), slot_row.data(),
                                   &rows, &dropped);
      cuda::DeviceArray<int64_t> d_counts(counts.size()), d_offsets(offsets.size()),
          d_rows_dropped(2);
      cuda::DeviceArray<int32_t> d_slot_row(slot_row.size());
      cuda::DeviceArray<uint8_t> scratch(cuda::plan_dispatch_scratch_bytes(tokens * k));
      cuda::plan_dispatch(d_idx.get(), d_scores.get(), tokens, k, experts, capacity, d_counts.get(),
                          d_offsets.get(), d_row_token.get(), d_slot_row.get(),
                          d_rows_dropped.get(), scratch.get());
      const bool same = d_counts.to_host() == counts && d_offsets.to_host() == offsets &&
                        d_row_token.to_host() == row_token && d_slot_row.to_host() == slot_row &&
                        d_rows_dropped.to_host() == std::vector<int64_t>{rows, dropped};
      out.push_back(
          {"plan_dispatch capacity " + std::to_string(capacity), same ? 0.0 : INFINITY, 0});
    }
  }
  {
    // The elementwise and copy ops, the head maximum and the bias update: bit for bit.
    const int64_t n = 1031 / scale + 1, heads = 8, da = 128, db = 64;
    const std::vector<float> a = random_values(n * heads * da, 60),
                             b = random_values(n * heads * db, 61);
    const std::vector<float> x = random_values(n * heads * da, 62);
    std::vector<float> y = random_values(x.size(), 63), sum(x.size());
    cuda::DeviceFloats d_a(a), d_b(b), d_x(x), d_y(y), d_sum(sum.size());
    kernels::host::add(a.data(), x.data(), sum.data(), n * heads * da);
    kernels::host::axpy(0.3f, x.data(), y.data(), n * heads * da);
    kernels::host::scale(y.data(), n * heads * da, -1.5f);
    cuda::add(d_a.get(), d_x.get(), d_sum.get(), n * heads * da);
    cuda::axpy(0.3f, d_x.get(), d_y.get(), n * heads * da);
    cuda::scale(d_y.get(), n * heads * da, -1.5f);
    out.push_back({"add, axpy, scale",
                   std::max(max_relative(d_sum.to_host(), sum), max_relative(d_y.to_host(), y)),
                   0});
    for (const bool broadcast : {false, true}) {
      // a2 and b2 are larger than what split_heads writes: both sides start from zeros.
      std::vector<float> cat(n * heads * (da + db)), a2(a.size()), b2(b.size());
      cuda::DeviceFloats d_cat(cat.size()), d_a2(a2), d_b2(b2);
      kernels::host::concat_heads(a.data(), b.data(), cat.data(), n, heads, da, db, broadcast);
      kernels::host::split_heads(x.data(), a2.data(), b2.data(), n, heads - 4, da + db - 96, 96,
                                 broadcast);
      cuda::concat_heads(d_a.get(), d_b.get(), d_cat.get(), n, heads, da, db, broadcast);
      cuda::split_heads(d_x.get(), d_a2.get(), d_b2.get(), n, heads - 4, da + db - 96, 96,
                        broadcast);
      out.push_back({std::string("concat_heads, split_heads") + (broadcast ? " broadcast" : ""),
                     std::max({max_relative(d_cat.to_host(), cat), max_relative(d_a2.to_host(), a2),
                               max_relative(d_b2.to_host(), b2)}),
                     0});
    }
    std::vector<float> t(a.size()), block(n * 100, 0.0f),
        acc{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 100.0f};
    cuda::DeviceFloats d_t(t.size()), d_block(block), d_acc(acc);  // before the host's writes
    kernels::host::transpose01(a.data(), n, heads, da, t.data());
    kernels::host::copy_block(a.data(), heads * da, block.data(), 100, n, 77);
    kernels::host::head_max(a.data(), n, heads, da, acc.data());
    cuda::transpose01(d_a.get(), n, heads, da, d_t.get());
    cuda::copy_block(d_a.get(), heads * da, d_block.get(), 100, n, 77);
    cuda::head_max(d_a.get(), n, heads, da, d_acc.get());
    out.push_back({"transpose01, copy_block, head_max",
                   std::max({max_relative(d_t.to_host(), t), max_relative(d_block.to_host(), block),
                             max_relative(d_acc.to_host(), acc)}),
                   0});
    std::vector<int64_t> counts(256);
    for (int64_t e = 0; e < 256; ++e) counts[e] = (e * 37) % 101;
    std::vector<float> bias = random_values(256, 64);
    cuda::DeviceArray<int64_t> d_counts(counts);
    cuda::DeviceFloats d_bias(bias);
    kernels::host::balance_bias_update(bias.data(), counts.data(), 256, 1e-3f);
    cuda::balance_bias_update(d_bias.get(), d_counts.get(), 256, 1e-3f);
    out.push_back({"balance_bias_update", max_relative(d_bias.to_host(), bias), 0});
  }
  {
    // The sigmoid gates (the device's expf: an ulp or two) and the cross-entropy's combine (the
    // device's double exp and log against glibc's).
    const int64_t rows = 1031 / scale + 1, cols = 96;
    double worst = 0;
    for (const int64_t width : {cols, int64_t{1}}) {
      const std::vector<float> x = random_values(rows * cols, 69),
                               g = random_values(rows * width, 70);
      const std::vector<float> dy = random_values(rows * cols, 71);
      std::vector<float> y(x.size()), dx(x.size()), dg(g.size());
      kernels::host::sigmoid_gate(x.data(), g.data(), y.data(), rows, cols, width);
      kernels::host::sigmoid_gate_backward(dy.data(), x.data(), g.data(), dx.data(), dg.data(),
                                           rows, cols, width);
      cuda::DeviceFloats d_x(x), d_g(g), d_dy(dy), d_y(y.size()), d_dx(dx.size()), d_dg(dg.size());
      cuda::sigmoid_gate(d_x.get(), d_g.get(), d_y.get(), rows, cols, width);
      cuda::sigmoid_gate_backward(d_dy.get(), d_x.get(), d_g.get(), d_dx.get(), d_dg.get(), rows,
                                  cols, width);
      worst = std::max({worst, max_relative(d_y.to_host(), y), max_relative(d_dx.to_host(), dx),
                        test::relative_to_largest(d_dg.to_host(), dg)});
    }
    out.push_back({"sigmoid_gate forward, backward", worst, 1e-6});
    const int64_t parts = 4;
    std::vector<float> stats = random_values(parts * rows * 3, 72, 3.0f);
    for (int64_t i = 0; i < parts * rows; ++i) stats[i * 3 + 1] = std::abs(stats[i * 3 + 1]) + 0.5f;
    std::vector<float> lse(rows);
    std::vector<double> row_loss(rows);
    double loss = 0.0;
    kernels::host::ce_combine_stats(stats.data(), parts, rows, lse.data(), &loss, row_loss.data());
    cuda::DeviceFloats d_stats(stats), d_lse(lse.size());
    cuda::DeviceArray<double> d_row_loss(row_loss.size()), d_loss(std::vector<double>{0.0});
    cuda::ce_combine_stats(d_stats.get(), parts, rows, d_lse.get(), d_loss.get(), d_row_loss.get());
    out.push_back({"ce_combine_stats",
                   std::max(max_relative(d_lse.to_host(), lse),
                            std::abs(d_loss.to_host()[0] - loss) / std::abs(loss)),
                   1e-6});
  }
  {
    // The balancing losses: the same phases and fma on both; the device's double exp and log
    // against glibc's.
    const int64_t batch = 4, seq = 1031 / scale + 1, tokens = batch * seq, experts = 64, k = 6;
    const kernels::RouterShape r{experts, k, 8, 3, false, true, 2.5f};
    const std::vector<float> logits = random_values(tokens * experts, 75, 2.0f);
    const std::vector<float> bias(experts, 0.0f);
    const auto [scores, gates, idx, counts] = test::route_on_host(r, tokens, logits, bias);
    const kernels::BalanceShape b{tokens, experts, k, batch, seq, 1e-3f, 1e-2f, 1e-3f};
    std::vector<float> ds(tokens * experts), du(tokens * experts);
    std::vector<uint8_t> host_scratch(kernels::balance_scratch_bytes(b));
    std::vector<double> sums(4);
    kernels::host::balance_losses(b, logits.data(), scores.data(), counts.data(), 0.5f, ds.data(),
                                  du.data(), sums.data(), host_scratch.data());
    cuda::DeviceFloats d_logits(logits), d_scores(scores), d_ds(ds.size()), d_du(du.size());
    cuda::DeviceArray<int64_t> d_counts(counts);
    cuda::DeviceArray<double> d_sums(4);
    cuda::DeviceArray<uint8_t> scratch(kernels::balance_scratch_bytes(b));
    cuda::balance_losses(b, d_logits.get(), d_scores.get(), d_counts.get(), 0.5f, d_ds.get(),
                         d_du.get(), d_sums.get(), scratch.get());
    double worst = std::max(test::relative_to_largest(d_ds.to_host(), ds),
                            test::relative_to_largest(d_du.to_host(), du));
    const std::vector<double> got = d_sums.to_host();
    for (size_t i = 0; i < 4; ++i)
      worst = std::max(worst, std::abs(got[i] - sums[i]) / std::max(std::abs(sums[i]), 1e-300));
    out.push_back({"balance_losses", worst, 1e-6});
  }
  {
    // The gradient norm's sum of squares: the same blocks in the same order, so bit for bit.
    const int64_t n = 1000003 / scale;
    const std::vector<float> x = random_values(n, 50, 3.0f);
    double sum = 0.25;
    kernels::host::sum_squares(x.data(), n, &sum);
    cuda::DeviceFloats d_x(x);
    cuda::DeviceArray<uint8_t> scratch(cuda::sum_squares_scratch_bytes(n));
    const std::vector<double> start{0.25};
    cuda::DeviceArray<double> d_sum(start);
    cuda::sum_squares(d_x.get(), n, d_sum.get(), scratch.get());
    out.push_back({"sum_squares", d_sum.to_host()[0] == sum ? 0.0 : INFINITY, 0});
  }
  {
    // The embedding's gradient: repeated ids and other blocks' ids; the sorted sums bit for bit.
    const int64_t n = 4099 / scale + 1, dim = 64, first = 500, rows = 700;
    std::vector<int32_t> ids(n);
    for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * i * 7 + 3) % 2000);
    const std::vector<float> dout = random_values(n * dim, 38);
    std::vector<float> dtable = random_values(rows * dim, 39);
    cuda::DeviceArray<int32_t> d_ids(ids);
    cuda::DeviceFloats d_dout(dout), d_table(dtable);
    cuda::DeviceFloats scratch((cuda::embedding_backward_scratch_bytes(n) + 3) / 4);
    kernels::host::embedding_backward(ids.data(), n, dout.data(), dim, dtable.data(), first, rows);
    cuda::embedding_backward(d_ids.get(), n, d_dout.get(), dim, d_table.get(), first, rows,
                             scratch.get());
    out.push_back({"embedding_backward", max_relative(d_table.to_host(), dtable), 0});
  }
  for (const int64_t cols : {int64_t{1}, int64_t{31}, int64_t{257}, int64_t{4096}}) {
    const int64_t rows = 1003 / scale + 1;
    const std::vector<float> x = random_values(rows * cols, 7, 2.0f), w = random_values(cols, 8);
    std::vector<float> y(rows * cols), rstd(rows);
    kernels::host::rmsnorm_forward(x.data(), w.data(), 1e-6f, y.data(), rstd.data(), rows, cols);
    cuda::DeviceFloats dx(x), dw(w), dy(y.size()), drstd(rstd.size());
    cuda::rmsnorm_forward(dx.get(), dw.get(), 1e-6f, dy.get(), drstd.get(), rows, cols);
    out.push_back({"rmsnorm_forward cols " + std::to_string(cols),
                   std::max(max_relative(dy.to_host(), y), max_relative(drstd.to_host(), rstd)),
                   0});
  }
  return out;
}

}  // namespace moetron::gpu
