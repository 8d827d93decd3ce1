// The MoE ops of core/ops.h: shape checks, then the CPU kernels of core/cpu/router.cc.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/cpu/router.h"
#include "core/ops.h"

namespace moetron::ops {
namespace {

cpu::Router router_of(const Tensor& logits, const RouterConfig& c) {
  MOETRON_CHECK(logits.dtype() == DType::f32 && logits.cols() == c.experts, "router: logits ",
                shape_str(logits.shape()), " for ", c.experts, " experts");
  MOETRON_CHECK(c.k >= 1 && c.k <= c.experts && c.n_group >= 1 && c.experts % c.n_group == 0 &&
                    c.topk_group >= 1 && c.topk_group <= c.n_group,
                "router: bad config k=", c.k, " groups=", c.n_group, "/", c.topk_group);
  return {logits.rows(),    c.experts, c.k, c.n_group, c.topk_group, c.scoring == Scoring::softmax,
          c.norm_topk_prob, c.scaling};
}

void require_rows(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* what) {
  MOETRON_CHECK(t.defined() && t.dtype() == dtype && t.rows() == rows && t.cols() == cols, what,
                ": expected [", rows, ", ", cols, "] ", dtype_name(dtype), ", got ",
                t.defined() ? shape_str(t.shape()) : "undefined");
}

}  // namespace

void router_forward(const Tensor& logits, const Tensor& bias, const RouterConfig& cfg,
                    Tensor& scores, Tensor& topk_idx, Tensor& gates) {
  const cpu::Router r = router_of(logits, cfg);
  MOETRON_CHECK(bias.numel() == cfg.experts, "router: bias of ", bias.numel());
  require_rows(scores, r.tokens, cfg.experts, DType::f32, "router scores");
  require_rows(topk_idx, r.tokens, cfg.k, DType::i32, "router topk_idx");
  require_rows(gates, r.tokens, cfg.k, DType::f32, "router gates");
  cpu::router_forward(r, logits.data<float>(), bias.data<float>(), scores.data<float>(),
                      topk_idx.data<int32_t>(), gates.data<float>());
}

void router_backward(const Tensor& dgates, const Tensor& scores, const Tensor& topk_idx,
                     const RouterConfig& cfg, Tensor& dscores, Tensor& dlogits) {
  const cpu::Router r = router_of(scores, cfg);
  require_rows(dgates, r.tokens, cfg.k, DType::f32, "router dgates");
  require_rows(dscores, r.tokens, cfg.experts, DType::f32, "router dscores");
  require_rows(dlogits, r.tokens, cfg.experts, DType::f32, "router dlogits");
  cpu::router_backward(r, dgates.data<float>(), scores.data<float>(), topk_idx.data<int32_t>(),
                       dscores.data<float>(), dlogits.data<float>());
}

BalanceLosses balance_losses(const Tensor& logits, const Tensor& scores,
                             std::span<const int64_t> counts, const RouterConfig& rc,
                             const BalanceConfig& bc, float grad_scale, Tensor* dscores,
                             Tensor* dlogits) {
  const cpu::Router r = router_of(logits, rc);
  MOETRON_CHECK(static_cast<int64_t>(counts.size()) == rc.experts && bc.batch * bc.seq == r.tokens,
                "balance_losses: ", counts.size(), " counts, ", bc.batch, "x", bc.seq, " rows");
  MOETRON_CHECK((dscores == nullptr) == (dlogits == nullptr), "balance_losses: grads go together");
  if (dscores) {
    require_rows(*dscores, r.tokens, rc.experts, DType::f32, "balance dscores");
    require_rows(*dlogits, r.tokens, rc.experts, DType::f32, "balance dlogits");
  }
  double out[4];
  cpu::balance_losses(r, {bc.seq_alpha, bc.aux_coeff, bc.z_coeff, bc.batch, bc.seq},
                      logits.data<float>(), scores.data<float>(), counts.data(), grad_scale,
                      dscores ? dscores->data<float>() : nullptr,
                      dlogits ? dlogits->data<float>() : nullptr, out);
  return {out[0], out[1], out[2], out[3]};
}

void plan_dispatch(const Tensor& topk_idx, const Tensor& scores, int64_t experts, int64_t capacity,
                   DispatchPlan& plan) {
  const int64_t n = topk_idx.rows(), k = topk_idx.cols();
  require_rows(scores, n, experts, DType::f32, "plan_dispatch scores");
  const int32_t* idx = topk_idx.data<int32_t>();
  const float* s = scores.data<float>();
  plan.counts.assign(static_cast<size_t>(experts), 0);
  plan.slot_row.assign(static_cast<size_t>(n * k), 0);
  for (int64_t i = 0; i < n * k; ++i) {
    MOETRON_CHECK(idx[i] >= 0 && idx[i] < experts, "plan_dispatch: expert ", idx[i]);
    ++plan.counts[idx[i]];
  }
  // kept[slot]: with a capacity, each expert keeps its highest-score assignments.
  std::vector<uint8_t> kept(static_cast<size_t>(n * k), 1);
  plan.dropped = 0;
  if (capacity > 0) {
    std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(experts));
    for (int64_t i = 0; i < n * k; ++i) by_expert[idx[i]].push_back(i);
    for (int64_t e = 0; e < experts; ++e) {
      auto& slots = by_expert[e];
      if (static_cast<int64_t>(slots.size()) <= capacity) continue;
      // Highest score first, ties to the lower token (slots are in token order).
      std::stable_sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) {
        return s[(a / k) * experts + e] > s[(b / k) * experts + e];
      });
      for (size_t i = static_cast<size_t>(capacity); i < slots.size(); ++i) kept[slots[i]] = 0;
      plan.dropped += static_cast<int64_t>(slots.size()) - capacity;
    }
  }
  plan.offsets.assign(static_cast<size_t>(experts + 1), 0);
  for (int64_t i = 0; i < n * k; ++i)
    if (kept[i]) ++plan.offsets[idx[i] + 1];
  std::partial_sum(plan.offsets.begin(), plan.offsets.end(), plan.offsets.begin());
  std::vector<int64_t> fill(plan.offsets.begin(), plan.offsets.end() - 1);
  plan.row_token.assign(static_cast<size_t>(plan.offsets.back()), 0);
  for (int64_t i = 0; i < n * k; ++i) {  // token order within each expert: stable
    if (!kept[i]) {
      plan.slot_row[i] = -1;
      continue;
    }
    const int64_t row = fill[idx[i]]++;
    plan.slot_row[i] = static_cast<int32_t>(row);
    plan.row_token[row] = static_cast<int32_t>(i / k);
  }
}

void gather_rows(const Tensor& src, std::span<const int32_t> row_token, Tensor& dst) {
  const auto rows = static_cast<int64_t>(row_token.size());
  MOETRON_CHECK(dst.rows() >= rows && dst.cols() == src.cols(), "gather_rows: ", rows, " rows of ",
                shape_str(src.shape()), " into ", shape_str(dst.shape()));
  cpu::gather_rows(src.data<float>(), row_token.data(), rows, src.cols(), dst.data<float>());
}

void combine_rows(const Tensor& src, std::span<const int32_t> slot_row, const Tensor& weights,
                  int64_t k, Tensor& dst, bool accumulate) {
  MOETRON_CHECK(static_cast<int64_t>(slot_row.size()) == dst.rows() * k && src.cols() == dst.cols(),
                "combine_rows: shapes");
  if (weights.defined()) MOETRON_CHECK(weights.numel() == dst.rows() * k, "combine_rows: weights");
  cpu::combine_rows(src.data<float>(), slot_row.data(),
                    weights.defined() ? weights.data<float>() : nullptr, dst.rows(), k, dst.cols(),
                    dst.data<float>(), accumulate);
}

void combine_rows_backward(const Tensor& dy, const Tensor& src, std::span<const int32_t> slot_row,
                           const Tensor& weights, int64_t k, Tensor& dsrc, Tensor& dweights) {
  MOETRON_CHECK(static_cast<int64_t>(slot_row.size()) == dy.rows() * k &&
                    weights.numel() == dy.rows() * k && dweights.numel() == dy.rows() * k &&
                    dsrc.cols() == dy.cols() && src.cols() == dy.cols(),
                "combine_rows_backward: shapes");
  cpu::combine_rows_backward(dy.data<float>(), src.data<float>(), slot_row.data(),
                             weights.data<float>(), dy.rows(), k, dy.cols(), dsrc.data<float>(),
                             dweights.data<float>());
}

void balance_bias_update(Tensor& bias, std::span<const int64_t> counts, float speed) {
  MOETRON_CHECK(bias.numel() == static_cast<int64_t>(counts.size()) && bias.dtype() == DType::f32,
                "balance_bias_update: ", counts.size(), " counts for bias ",
                shape_str(bias.shape()));
  double mean = 0;
  for (int64_t c : counts) mean += static_cast<double>(c);
  mean /= static_cast<double>(counts.size());
  float* b = bias.data<float>();
  for (size_t e = 0; e < counts.size(); ++e) {
    const double diff = mean - static_cast<double>(counts[e]);
    b[e] += speed * static_cast<float>((diff > 0) - (diff < 0));
  }
}

void grouped_matmul(const Tensor& x, std::span<const Tensor> weights,
                    std::span<const int64_t> offsets, Tensor& y) {
  MOETRON_CHECK(offsets.size() == weights.size() + 1, "grouped_matmul: offsets");
  for (size_t e = 0; e < weights.size(); ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    Tensor ye = y.slice(offsets[e], offsets[e + 1]);
    matmul(x.slice(offsets[e], offsets[e + 1]), false, weights[e], true, ye);
  }
}

void grouped_matmul_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> weights,
                             std::span<const int64_t> offsets, std::span<Tensor> dweights,
                             Tensor& dx) {
  MOETRON_CHECK(offsets.size() == weights.size() + 1 && dweights.size() == weights.size(),
                "grouped_matmul_backward: sizes");
  for (size_t e = 0; e < weights.size(); ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    const Tensor dye = dy.slice(offsets[e], offsets[e + 1]);
    matmul(dye, true, x.slice(offsets[e], offsets[e + 1]), false, dweights[e], 1.0f, 1.0f);
    Tensor dxe = dx.slice(offsets[e], offsets[e + 1]);
    matmul(dye, false, weights[e], false, dxe);
  }
}

}  // namespace moetron::ops
