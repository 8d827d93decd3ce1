#include "models/moe.h"

#include <cmath>

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

MoE::MoE(ParamTable& params, const std::string& prefix, const ModelDims& d, const Runtime& rt)
    : params_(params),
      device_(rt.device),
      name_(prefix + "gate"),
      hidden_(d.hidden),
      inter_(d.moe.intermediate),
      slice_begin_(rt.tp.share(d.rows()) * rt.tp.rank),
      slice_end_(rt.tp.share(d.rows()) * (rt.tp.rank + 1)),
      whole_(rt.tp.size == 1),
      tp_comm_(rt.tp.comm),
      dispatcher_(d.moe.experts, rt.ep.comm, rt.device) {
  const MoeDims& m = d.moe;
  const int64_t rows = d.rows(), slots = rows * m.k;
  router_ = {m.experts, m.k, m.n_group, m.topk_group, m.scoring, m.norm_topk_prob, m.scaling};
  balance_ = {m.seq_aux_alpha, m.aux_coeff, m.z_coeff, d.batch, d.seq};
  if (m.capacity_factor > 0)
    capacity_ = static_cast<int64_t>(
        std::ceil(static_cast<double>(m.capacity_factor) * static_cast<double>(slots) /
                  static_cast<double>(m.experts)));
  gate_ = params.add(prefix + "gate.weight", {m.experts, d.hidden}, ParamKind::matrix);
  bias_ = params.add(prefix + "gate.e_score_correction_bias", {m.experts}, ParamKind::buffer);
  const int64_t local_experts = rt.ep.share(m.experts), first = local_experts * rt.ep.rank;
  for (int64_t e = first; e < first + local_experts; ++e) {
    const std::string p = prefix + "experts." + std::to_string(e) + ".";
    // gate and up adjacent: one fused [2I, d] GEMM per expert.
    gate_proj_.push_back(params.add(p + "gate_proj.weight", {inter_, d.hidden}, ParamKind::matrix,
                                    ShardSpec::expert()));
    up_proj_.push_back(params.add(p + "up_proj.weight", {inter_, d.hidden}, ParamKind::matrix,
                                  ShardSpec::expert()));
    down_proj_.push_back(params.add(p + "down_proj.weight", {d.hidden, inter_}, ParamKind::matrix,
                                    ShardSpec::expert()));
  }
  if (m.shared > 0)
    shared_ =
        std::make_unique<SwiGLU>(params, prefix + "shared_experts.", d, m.shared * inter_, rt);
  if (m.shared_gate) {
    shared_gate_ =
        params.add(prefix + "shared_expert_gate.weight", {1, d.hidden}, ParamKind::matrix);
    shared_out_ = rt.empty({rows, d.hidden}), d_shared_scaled_ = rt.empty({rows, d.hidden});
    shared_logit_ = rt.empty({rows, 1}), d_shared_logit_ = rt.empty({rows, 1});
  }
  for (Tensor* t : {&logits_, &scores_, &dlogits_, &dscores_}) *t = rt.empty({rows, m.experts});
  topk_idx_ = rt.empty({rows, m.k}, DType::i32);
  gates_ = rt.empty({rows, m.k});
  dgates_ = rt.empty({rows, m.k});
  if (tp_comm_) dgates_slice_ = rt.empty({slice_end_ - slice_begin_, m.k});
  if (shared_) d_shared_ = rt.empty({rows, d.hidden});
  send_counts_.assign(static_cast<size_t>(m.experts), 0);
  plan_ = ops::make_dispatch_plan(rows, m.k, m.experts, rt.device);
  if (!whole_)
    slice_ = ops::make_plan_slice(rows, m.k, m.experts, slice_begin_, slice_end_, rt.device);
}

const std::vector<Tensor>& MoE::expert_gate_up() {
  if (gate_up_views_.empty())
    for (size_t e = 0; e < gate_proj_.size(); ++e)
      gate_up_views_.push_back(params_.fused_weight(gate_proj_[e], up_proj_[e]));
  return gate_up_views_;
}

const std::vector<Tensor>& MoE::expert_down() {
  if (down_views_.empty())
    for (const ParamRef& p : down_proj_) down_views_.push_back(p.weight());
  return down_views_;
}

std::span<const int64_t> MoE::send_counts() {
  if (!whole_) return slice_.host_counts.span<int64_t>();
  // The plan's offsets on the host (plan_dispatch brought them with its counts, in the one copy
  // to the host per MoE layer).
  const std::span<const int64_t> offsets = plan_.host_offsets.span<int64_t>();
  for (size_t e = 0; e < send_counts_.size(); ++e) send_counts_[e] = offsets[e + 1] - offsets[e];
  return send_counts_;
}

void MoE::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  if (step)
    decode(x, y, *step);
  else
    train_forward(x, y);
}

void MoE::train_forward(const Tensor& x, Tensor& y) {
  linear_forward(x, gate_.value(), logits_);
  ops::router_forward(logits_, bias_.value(), router_, scores_, topk_idx_, gates_);
  ops::plan_dispatch(topk_idx_, scores_, capacity_, plan_, whole_ ? nullptr : &slice_);
  stats_.counts.assign(plan_.host_counts.span<int64_t>().begin(),
                       plan_.host_counts.span<int64_t>().end());
  stats_.dropped = plan_.dropped;
  if (balance_sums_.defined())
    ops::balance_losses(logits_, scores_, plan_.counts, router_, balance_, 0.0f, nullptr, nullptr,
                        &balance_sums_);

  dispatcher_.plan(send_counts());
  stats_.rows_sent = dispatcher_.sent_rows();
  stats_.rows_off_rank = dispatcher_.sent_off_rank();
  stats_.rows_received_off_rank = dispatcher_.received_off_rank();
  stats_.rows_received = dispatcher_.local_rows();
  const int64_t sent = dispatcher_.sent_rows(), local = dispatcher_.local_rows();
  const Tensor& offsets = dispatcher_.local_offsets();
  x_sent_ = x_sent_buf_.rows(sent, hidden_);
  ops::gather_rows(x, row_tokens(), x_sent_);
  x_local_ = dispatcher_.local() ? x_sent_ : x_local_buf_.rows(local, hidden_);
  if (!dispatcher_.local()) dispatcher_.dispatch(x_sent_, x_local_);
  gate_up_ = gate_up_buf_.rows(local, 2 * inter_);
  act_ = act_buf_.rows(local, inter_);
  out_local_ = out_local_buf_.rows(local, hidden_);
  experts_forward(x_local_, expert_gate_up(), offsets, gate_up_);
  ops::swiglu_forward(gate_up_, act_);
  experts_forward(act_, expert_down(), offsets, out_local_);
  out_sent_ = dispatcher_.local() ? out_local_ : out_sent_buf_.rows(sent, hidden_);
  if (!dispatcher_.local()) dispatcher_.combine(out_local_, out_sent_);
  if (shared_gate_.id() >= 0) {
    shared_->forward(x, shared_out_);
    gate_shared(x, shared_out_, shared_logit_, y, nullptr);
  } else if (shared_) {
    shared_->forward(x, y);
  }
  ops::combine_rows(out_sent_, slot_rows(), gates_, router_.k, y,
                    /*accumulate=*/shared_ != nullptr);
}

void MoE::gate_shared(const Tensor& x, const Tensor& shared_out, Tensor& logit, Tensor& y,
                      const DecodeStep* step) {
  linear_forward(x, shared_gate_.value(), logit, step);
  ops::sigmoid_gate(shared_out, logit, y);
}

void MoE::decode(const Tensor& x, Tensor& y, const DecodeStep& step) {
  MOETRON_CHECK(whole_ && dispatcher_.local(), "MoE ", name_, ": decoding runs on one rank");
  const int64_t n = x.rows(), k = router_.k, experts = router_.experts;
  Tensor logits = decode_logits_.rows(n, experts), scores = decode_scores_.rows(n, experts);
  Tensor topk = decode_topk_.rows(n, k), gates = decode_gates_.rows(n, k);
  linear_forward(x, gate_.value(), logits, &step);
  ops::router_forward(logits, bias_.value(), router_, scores, topk, gates);
  // The plan's buffers, grown to the most tokens seen; this call's plan views n * k of them.
  if (!decode_plan_.slot_row.defined() || decode_plan_.slot_row.numel() < n * k)
    decode_plan_ = ops::make_dispatch_plan(n + n / 4, k, experts, device_);
  ops::DispatchPlan plan{decode_plan_.counts,
                         decode_plan_.offsets,
                         decode_plan_.row_token.view(0, {n * k}),
                         decode_plan_.slot_row.view(0, {n * k}),
                         0,
                         0,
                         decode_plan_.host_counts,
                         decode_plan_.host_offsets};
  ops::plan_dispatch(topk, scores, /*capacity=*/0, plan);
  Tensor in = x_sent_buf_.rows(plan.rows, hidden_), out = out_local_buf_.rows(plan.rows, hidden_);
  Tensor gate_up = gate_up_buf_.rows(plan.rows, 2 * inter_);
  Tensor act = act_buf_.rows(plan.rows, inter_);
  ops::gather_rows(x, plan.row_tokens(), in);
  grouped_forward(in, expert_gate_up(), plan.host_offsets, gate_up, &step);
  ops::swiglu_forward(gate_up, act);
  grouped_forward(act, expert_down(), plan.host_offsets, out, &step);
  if (shared_gate_.id() >= 0) {
    Tensor shared = decode_shared_.rows(n, hidden_), logit = decode_shared_logit_.rows(n, 1);
    shared_->forward(x, shared, step);
    gate_shared(x, shared, logit, y, &step);
  } else if (shared_) {
    shared_->forward(x, y, step);
  }
  ops::combine_rows(out, plan.slot_row, gates, k, y, /*accumulate=*/shared_ != nullptr);
}

void MoE::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  const int64_t sent = dispatcher_.sent_rows(), local = dispatcher_.local_rows();
  const Tensor& offsets = dispatcher_.local_offsets();
  Tensor d_sent = d_sent_buf_.rows(sent, hidden_);
  ops::combine_rows_backward(dy, out_sent_, slot_rows(), gates_, router_.k, d_sent, dgates_);
  if (tp_comm_) {  // the router needs the gates' gradients of every slice
    ops::copy(dgates_.slice(slice_begin_, slice_end_), dgates_slice_);
    tp_comm_->all_gather(dgates_slice_, dgates_);
  }
  std::vector<Tensor> d_down, d_gate_up;
  for (size_t e = 0; e < down_proj_.size(); ++e) {
    d_down.push_back(down_proj_[e].grad());
    d_gate_up.push_back(params_.fused_grad(gate_proj_[e], up_proj_[e]));
  }
  Tensor d_local = dispatcher_.local() ? d_sent : d_local_buf_.rows(local, hidden_);
  if (!dispatcher_.local()) dispatcher_.dispatch(d_sent, d_local);
  Tensor d_act = d_act_buf_.rows(local, inter_), d_gu = d_gate_up_buf_.rows(local, 2 * inter_);
  Tensor dx_local = dx_local_buf_.rows(local, hidden_);
  experts_backward(d_local, act_, expert_down(), offsets, d_down, d_act);
  ops::swiglu_backward(d_act, gate_up_, d_gu);
  experts_backward(d_gu, x_local_, expert_gate_up(), offsets, d_gate_up, dx_local);
  // d_sent is free again: it takes the input gradients back.
  if (!dispatcher_.local()) dispatcher_.combine(dx_local, d_sent);
  ops::combine_rows(dispatcher_.local() ? dx_local : d_sent, slot_rows(), Tensor(), router_.k, dx,
                    /*accumulate=*/false);
  // Router: the balance losses' gradients, then the gates' on top.
  if (balance_.seq_alpha > 0 || balance_.aux_coeff > 0 || balance_.z_coeff > 0) {
    ops::balance_losses(logits_, scores_, plan_.counts, router_, balance_, aux_grad_scale_,
                        &dscores_, &dlogits_, nullptr);
  } else {
    ops::fill(dscores_, 0.0f);
    ops::fill(dlogits_, 0.0f);
  }
  ops::router_backward(dgates_, scores_, topk_idx_, router_, dscores_, dlogits_);
  // The router ran on every token: its weight gradient is whole on every rank, and its part of
  // dx is added for this rank's slice only, so the sum over ranks counts it once.
  Tensor dgate = gate_.grad();
  ops::matmul(dlogits_, true, x, false, dgate, 1.0f, 1.0f);
  Tensor dx_slice = dx.slice(slice_begin_, slice_end_);
  ops::matmul(dlogits_.slice(slice_begin_, slice_end_), false, gate_.value(), false, dx_slice, 1.0f,
              1.0f);
  if (shared_gate_.id() >= 0) {
    // Under tp the shared output is this rank's partial sum, so is the gate logit's gradient:
    // summed over the group, it is then the router's case (whole weight gradient on every
    // rank, the dx part on this rank's slice).
    ops::sigmoid_gate_backward(dy, shared_out_, shared_logit_, d_shared_scaled_, d_shared_logit_);
    if (tp_comm_) tp_comm_->all_reduce(d_shared_logit_);
    Tensor dw = shared_gate_.grad();
    ops::matmul(d_shared_logit_, true, x, false, dw, 1.0f, 1.0f);
    ops::matmul(d_shared_logit_.slice(slice_begin_, slice_end_), false, shared_gate_.value(), false,
                dx_slice, 1.0f, 1.0f);
    shared_->backward(d_shared_scaled_, x, d_shared_);
    ops::axpy(1.0f, d_shared_, dx);
  } else if (shared_) {
    shared_->backward(dy, x, d_shared_);
    ops::axpy(1.0f, d_shared_, dx);
  }
}

void MoE::update_bias(std::span<const int64_t> counts, float speed) {
  Tensor b = bias_.value();
  ops::balance_bias_update(b, ops::from_host(counts, b.device()), speed);
}

}  // namespace moetron
