// The MoE ops of core/ops.h: shape, dtype and device checks, then the backend.

#include <cstdint>
#include <numeric>
#include <span>

#include "core/backend.h"
#include "core/ops.h"

namespace moetron::ops {
namespace {

void check_router(const Tensor& logits, const RouterConfig& c) {
  MOETRON_CHECK(logits.dtype() == DType::f32 && logits.cols() == c.experts, "router: logits ",
                shape_str(logits.shape()), " for ", c.experts, " experts");
  MOETRON_CHECK(c.k >= 1 && c.k <= c.experts && c.n_group >= 1 && c.experts % c.n_group == 0 &&
                    c.topk_group >= 1 && c.topk_group <= c.n_group,
                "router: bad config k=", c.k, " groups=", c.n_group, "/", c.topk_group);
}

void require_rows(const Tensor& t, int64_t rows, int64_t cols, DType dtype, const char* what) {
  MOETRON_CHECK(t.defined() && t.dtype() == dtype && t.rows() == rows && t.cols() == cols, what,
                ": expected [", rows, ", ", cols, "] ", dtype_name(dtype), ", got ",
                t.defined() ? shape_str(t.shape()) : "undefined");
}

void require_vector(const Tensor& t, int64_t n, DType dtype, const char* what) {
  MOETRON_CHECK(t.defined() && t.dtype() == dtype && t.numel() == n, what, ": expected ", n, " ",
                dtype_name(dtype), ", got ", t.defined() ? shape_str(t.shape()) : "undefined",
                t.defined() ? std::string(" ") + dtype_name(t.dtype()) : std::string());
}

}  // namespace

void router_forward(const Tensor& logits, const Tensor& bias, const RouterConfig& cfg,
                    Tensor& scores, Tensor& topk_idx, Tensor& gates) {
  check_router(logits, cfg);
  require_vector(bias, cfg.experts, DType::f32, "router bias");
  require_rows(scores, logits.rows(), cfg.experts, DType::f32, "router scores");
  require_rows(topk_idx, logits.rows(), cfg.k, DType::i32, "router topk_idx");
  require_rows(gates, logits.rows(), cfg.k, DType::f32, "router gates");
  backend_of("router", {&logits, &bias, &scores, &topk_idx, &gates})
      .router_forward(logits, bias, cfg, scores, topk_idx, gates);
}

void router_backward(const Tensor& dgates, const Tensor& scores, const Tensor& topk_idx,
                     const RouterConfig& cfg, Tensor& dscores, Tensor& dlogits) {
  check_router(scores, cfg);
  const int64_t n = scores.rows();
  require_rows(dgates, n, cfg.k, DType::f32, "router dgates");
  require_rows(topk_idx, n, cfg.k, DType::i32, "router topk_idx");
  require_rows(dscores, n, cfg.experts, DType::f32, "router dscores");
  require_rows(dlogits, n, cfg.experts, DType::f32, "router dlogits");
  backend_of("router_backward", {&dgates, &scores, &topk_idx, &dscores, &dlogits})
      .router_backward(dgates, scores, topk_idx, cfg, dscores, dlogits);
}

void balance_losses(const Tensor& logits, const Tensor& scores, const Tensor& counts,
                    const RouterConfig& rc, const BalanceConfig& bc, float grad_scale,
                    Tensor* dscores, Tensor* dlogits, Tensor* sums) {
  check_router(logits, rc);
  require_rows(scores, logits.rows(), rc.experts, DType::f32, "balance scores");
  require_vector(counts, rc.experts, DType::i64, "balance counts");
  MOETRON_CHECK(bc.batch * bc.seq == logits.rows(), "balance_losses: ", bc.batch, "x", bc.seq,
                " rows for ", logits.rows());
  MOETRON_CHECK((dscores == nullptr) == (dlogits == nullptr), "balance_losses: grads go together");
  const Tensor none;
  if (dscores) {
    require_rows(*dscores, logits.rows(), rc.experts, DType::f32, "balance dscores");
    require_rows(*dlogits, logits.rows(), rc.experts, DType::f32, "balance dlogits");
  }
  if (sums) require_vector(*sums, kBalanceSums, DType::f64, "balance sums");
  backend_of("balance_losses", {&logits, &scores, &counts, dscores ? dscores : &none,
                                dlogits ? dlogits : &none, sums ? sums : &none})
      .balance_losses(logits, scores, counts, rc, bc, grad_scale, dscores, dlogits, sums);
}

DispatchPlan make_dispatch_plan(int64_t tokens, int64_t k, int64_t experts, Device device) {
  DispatchPlan plan;
  plan.counts = Tensor::empty({experts}, DType::i64, device);
  plan.offsets = Tensor::empty({experts + 1}, DType::i64, device);
  plan.slot_row = Tensor::empty({tokens * k}, DType::i32, device);
  plan.row_token = Tensor::empty({tokens * k}, DType::i32, device);
  plan.host_counts = Tensor::zeros({experts}, DType::i64);
  plan.host_offsets = Tensor::zeros({experts + 1}, DType::i64);
  return plan;
}

PlanSlice make_plan_slice(int64_t tokens, int64_t k, int64_t experts, int64_t begin, int64_t end,
                          Device device) {
  PlanSlice slice;
  slice.begin = begin;
  slice.end = end;
  slice.row_token = Tensor::empty({tokens * k}, DType::i32, device);
  slice.slot_row = Tensor::empty({tokens * k}, DType::i32, device);
  slice.host_counts = Tensor::zeros({experts}, DType::i64);
  return slice;
}

void plan_dispatch(const Tensor& topk_idx, const Tensor& scores, int64_t capacity,
                   DispatchPlan& plan, PlanSlice* slice) {
  const int64_t n = topk_idx.rows(), k = topk_idx.cols(), experts = scores.cols();
  MOETRON_CHECK(topk_idx.dtype() == DType::i32, "plan_dispatch: topk_idx must be i32");
  require_rows(scores, n, experts, DType::f32, "plan_dispatch scores");
  require_vector(plan.counts, experts, DType::i64, "plan_dispatch counts");
  require_vector(plan.offsets, experts + 1, DType::i64, "plan_dispatch offsets");
  require_vector(plan.slot_row, n * k, DType::i32, "plan_dispatch slot_row");
  require_vector(plan.row_token, n * k, DType::i32, "plan_dispatch row_token");
  MOETRON_CHECK(plan.host_counts.defined() == plan.host_offsets.defined(),
                "plan_dispatch: host_counts and host_offsets go together");
  if (plan.host_offsets.defined()) {
    require_vector(plan.host_counts, experts, DType::i64, "plan_dispatch host_counts");
    require_vector(plan.host_offsets, experts + 1, DType::i64, "plan_dispatch host_offsets");
    MOETRON_CHECK(plan.host_counts.device() == Device{} && plan.host_offsets.device() == Device{},
                  "plan_dispatch: host_counts and host_offsets must be on the host, not on ",
                  device_name(plan.host_offsets.device()));
  }
  if (slice) {
    MOETRON_CHECK(0 <= slice->begin && slice->begin <= slice->end && slice->end <= n,
                  "plan_dispatch: the slice's tokens [", slice->begin, ", ", slice->end,
                  ") must lie within the plan's [0, ", n, ")");
    require_vector(slice->row_token, n * k, DType::i32, "plan_dispatch slice row_token");
    require_vector(slice->slot_row, n * k, DType::i32, "plan_dispatch slice slot_row");
    require_vector(slice->host_counts, experts, DType::i64, "plan_dispatch slice host_counts");
    MOETRON_CHECK(slice->host_counts.device() == Device{},
                  "plan_dispatch: the slice's host_counts must be on the host, not on ",
                  device_name(slice->host_counts.device()));
  }
  const Tensor none;
  backend_of("plan_dispatch",
             {&topk_idx, &scores, &plan.counts, &plan.offsets, &plan.slot_row, &plan.row_token,
              slice ? &slice->row_token : &none, slice ? &slice->slot_row : &none})
      .plan_dispatch(topk_idx, scores, capacity, plan, slice);
  if (slice) {
    const std::span<const int64_t> counts = slice->host_counts.span<int64_t>();
    slice->rows = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  }
}

void gather_rows(const Tensor& src, const Tensor& row_token, Tensor& dst) {
  MOETRON_CHECK(row_token.dtype() == DType::i32, "gather_rows: row_token must be i32");
  MOETRON_CHECK(src.dtype() == DType::f32 && dst.dtype() == DType::f32 &&
                    dst.rows() >= row_token.numel() && dst.cols() == src.cols(),
                "gather_rows: ", row_token.numel(), " rows of ", shape_str(src.shape()), " into ",
                shape_str(dst.shape()));
  backend_of("gather_rows", {&src, &row_token, &dst}).gather_rows(src, row_token, dst);
}

void combine_rows(const Tensor& src, const Tensor& slot_row, const Tensor& weights, int64_t k,
                  Tensor& dst, bool accumulate) {
  MOETRON_CHECK(slot_row.dtype() == DType::i32 && slot_row.numel() == dst.rows() * k &&
                    src.cols() == dst.cols(),
                "combine_rows: shapes");
  if (weights.defined()) MOETRON_CHECK(weights.numel() == dst.rows() * k, "combine_rows: weights");
  backend_of("combine_rows", {&src, &slot_row, &weights, &dst})
      .combine_rows(src, slot_row, weights, k, dst, accumulate);
}

void combine_rows_backward(const Tensor& dy, const Tensor& src, const Tensor& slot_row,
                           const Tensor& weights, int64_t k, Tensor& dsrc, Tensor& dweights) {
  MOETRON_CHECK(slot_row.dtype() == DType::i32 && slot_row.numel() == dy.rows() * k &&
                    weights.numel() == dy.rows() * k && dweights.numel() == dy.rows() * k &&
                    dsrc.cols() == dy.cols() && src.cols() == dy.cols(),
                "combine_rows_backward: shapes");
  backend_of("combine_rows_backward", {&dy, &src, &slot_row, &weights, &dsrc, &dweights})
      .combine_rows_backward(dy, src, slot_row, weights, k, dsrc, dweights);
}

void balance_bias_update(Tensor& bias, const Tensor& counts, float speed) {
  MOETRON_CHECK(bias.dtype() == DType::f32, "balance_bias_update: bias must be f32");
  require_vector(counts, bias.numel(), DType::i64, "balance_bias_update counts");
  backend_of("balance_bias_update", {&bias, &counts}).balance_bias_update(bias, counts, speed);
}

namespace {
// The offsets' shape, and each weight on x's device: the backend reads them in place (a host
// weight beside device rows would pass on cpu:1, both host memory, and fault on a GPU).
void check_grouped(const Tensor& x, std::span<const Tensor> weights, const Tensor& offsets,
                   const char* op) {
  require_vector(offsets, static_cast<int64_t>(weights.size()) + 1, DType::i64,
                 detail::concat(op, " offsets").c_str());
  for (size_t e = 0; e < weights.size(); ++e)
    MOETRON_CHECK(weights[e].device() == x.device(), op, ": weight ", e, " on ",
                  device_name(weights[e].device()), " beside x on ", device_name(x.device()));
}
// The offsets among the tensors that choose the backend, unless they are on the host (allowed
// whatever x's device: grouped_matmul's contract).
const Tensor* offsets_on(const Tensor& x, const Tensor& offsets) {
  return offsets.device() == Device{} ? &x : &offsets;
}
}  // namespace

void grouped_matmul(const Tensor& x, std::span<const Tensor> weights, const Tensor& offsets,
                    Tensor& y) {
  check_grouped(x, weights, offsets, "grouped_matmul");
  backend_of("grouped_matmul", {&x, offsets_on(x, offsets), &y})
      .grouped_matmul(x, weights, offsets, y);
}

void grouped_matmul_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> weights,
                             const Tensor& offsets, std::span<Tensor> dweights, Tensor& dx) {
  check_grouped(x, weights, offsets, "grouped_matmul_backward");
  MOETRON_CHECK(dweights.size() == weights.size(), "grouped_matmul_backward: ", dweights.size(),
                " weight gradients for ", weights.size(), " weights");
  for (size_t e = 0; e < dweights.size(); ++e)
    MOETRON_CHECK(!dweights[e].defined() || dweights[e].device() == x.device(),
                  "grouped_matmul_backward: weight gradient ", e, " on ",
                  device_name(dweights[e].device()), " beside x on ", device_name(x.device()));
  backend_of("grouped_matmul_backward", {&dy, &x, offsets_on(x, offsets), &dx})
      .grouped_matmul_backward(dy, x, weights, offsets, dweights, dx);
}

}  // namespace moetron::ops
