#include "models/moe.h"

#include <cmath>

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

MoE::MoE(ParamTable& params, const std::string& prefix, const ModelDims& d)
    : params_(params), name_(prefix + "gate") {
  const MoeDims& m = d.moe;
  const int64_t rows = d.rows(), slots = rows * m.k, inter = m.intermediate;
  router_ = {m.experts, m.k, m.n_group, m.topk_group, m.scoring, m.norm_topk_prob, m.scaling};
  balance_ = {m.seq_aux_alpha, m.aux_coeff, m.z_coeff, d.batch, d.seq};
  if (m.capacity_factor > 0)
    capacity_ = static_cast<int64_t>(
        std::ceil(static_cast<double>(m.capacity_factor) * static_cast<double>(slots) /
                  static_cast<double>(m.experts)));
  gate_ = params.add(prefix + "gate.weight", {m.experts, d.hidden}, ParamKind::matrix);
  bias_ = params.add(prefix + "gate.e_score_correction_bias", {m.experts}, ParamKind::buffer);
  const ShardSpec expert_shard{ShardGroup::expert, 0};
  for (int64_t e = 0; e < m.experts; ++e) {
    const std::string p = prefix + "experts." + std::to_string(e) + ".";
    // gate and up adjacent: one fused [2I, d] GEMM per expert.
    gate_proj_.push_back(
        params.add(p + "gate_proj.weight", {inter, d.hidden}, ParamKind::matrix, expert_shard));
    up_proj_.push_back(
        params.add(p + "up_proj.weight", {inter, d.hidden}, ParamKind::matrix, expert_shard));
    down_proj_.push_back(
        params.add(p + "down_proj.weight", {d.hidden, inter}, ParamKind::matrix, expert_shard));
  }
  if (m.shared > 0)
    shared_ = std::make_unique<SwiGLU>(params, prefix + "shared_experts.", d.hidden,
                                       m.shared * inter, rows);
  logits_ = Tensor::empty({rows, m.experts});
  scores_ = Tensor::empty({rows, m.experts});
  dlogits_ = Tensor::empty({rows, m.experts});
  dscores_ = Tensor::empty({rows, m.experts});
  topk_idx_ = Tensor::empty({rows, m.k}, DType::i32);
  gates_ = Tensor::empty({rows, m.k});
  dgates_ = Tensor::empty({rows, m.k});
  for (Tensor* t : {&x_perm_, &out_perm_, &d_out_perm_, &dx_perm_})
    *t = Tensor::empty({slots, d.hidden});
  for (Tensor* t : {&gate_up_, &d_gate_up_}) *t = Tensor::empty({slots, 2 * inter});
  for (Tensor* t : {&act_, &d_act_}) *t = Tensor::empty({slots, inter});
  if (shared_) d_shared_ = Tensor::empty({rows, d.hidden});
}

std::vector<Tensor> MoE::expert_gate_up() const {
  std::vector<Tensor> w;
  for (size_t e = 0; e < gate_proj_.size(); ++e)
    w.push_back(params_.fused_value(gate_proj_[e], up_proj_[e]));
  return w;
}

std::vector<Tensor> MoE::expert_down() const {
  std::vector<Tensor> w;
  for (const ParamRef& p : down_proj_) w.push_back(p.value());
  return w;
}

void MoE::forward(const Tensor& x, Tensor& y) {
  linear_forward(x, gate_.value(), logits_);
  ops::router_forward(logits_, bias_.value(), router_, scores_, topk_idx_, gates_);
  ops::plan_dispatch(topk_idx_, scores_, router_.experts, capacity_, plan_);
  stats_.counts = plan_.counts;
  stats_.dropped = plan_.dropped;
  stats_.losses = ops::balance_losses(logits_, scores_, plan_.counts, router_, balance_, 0.0f,
                                      nullptr, nullptr);

  const int64_t kept = plan_.offsets.back();
  ops::gather_rows(x, plan_.row_token, x_perm_);
  Tensor x_perm = x_perm_.slice(0, kept), gate_up = gate_up_.slice(0, kept);
  Tensor act = act_.slice(0, kept), out = out_perm_.slice(0, kept);
  ops::grouped_matmul(x_perm, expert_gate_up(), plan_.offsets, gate_up);
  ops::swiglu_forward(gate_up, act);
  ops::grouped_matmul(act, expert_down(), plan_.offsets, out);
  if (shared_) shared_->forward(x, y);
  ops::combine_rows(out_perm_, plan_.slot_row, gates_, router_.k, y,
                    /*accumulate=*/shared_ != nullptr);
}

void MoE::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  const int64_t kept = plan_.offsets.back();
  ops::combine_rows_backward(dy, out_perm_, plan_.slot_row, gates_, router_.k, d_out_perm_,
                             dgates_);
  std::vector<Tensor> d_down, d_gate_up;
  for (size_t e = 0; e < down_proj_.size(); ++e) {
    d_down.push_back(down_proj_[e].grad());
    d_gate_up.push_back(params_.fused_grad(gate_proj_[e], up_proj_[e]));
  }
  Tensor d_act = d_act_.slice(0, kept), d_gu = d_gate_up_.slice(0, kept);
  Tensor dx_perm = dx_perm_.slice(0, kept);
  ops::grouped_matmul_backward(d_out_perm_.slice(0, kept), act_.slice(0, kept), expert_down(),
                               plan_.offsets, d_down, d_act);
  ops::swiglu_backward(d_act, gate_up_.slice(0, kept), d_gu);
  ops::grouped_matmul_backward(d_gu, x_perm_.slice(0, kept), expert_gate_up(), plan_.offsets,
                               d_gate_up, dx_perm);
  ops::combine_rows(dx_perm_, plan_.slot_row, Tensor(), router_.k, dx, /*accumulate=*/false);
  // Router: the balance losses' gradients, then the gates' on top.
  if (balance_.seq_alpha > 0 || balance_.aux_coeff > 0 || balance_.z_coeff > 0) {
    ops::balance_losses(logits_, scores_, plan_.counts, router_, balance_, aux_grad_scale_,
                        &dscores_, &dlogits_);
  } else {
    ops::fill(dscores_, 0.0f);
    ops::fill(dlogits_, 0.0f);
  }
  ops::router_backward(dgates_, scores_, topk_idx_, router_, dscores_, dlogits_);
  Tensor dgate = gate_.grad();
  linear_backward(dlogits_, x, gate_.value(), dgate, dx, /*accumulate_dx=*/true);
  if (shared_) {
    shared_->backward(dy, x, d_shared_);
    ops::axpy(1.0f, d_shared_, dx);
  }
}

void MoE::update_bias(std::span<const int64_t> counts, float speed) {
  Tensor b = bias_.value();
  ops::balance_bias_update(b, counts, speed);
}

}  // namespace moetron
