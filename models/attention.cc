#include "models/attention.h"

#include <array>
#include <cmath>
#include <limits>

#include "core/ops.h"
#include "core/ops_decode.h"
#include "models/linear.h"

namespace moetron {

Attention::Attention(ParamTable& params, const std::string& prefix, const ModelDims& d,
                     const RopeTables& rope, const Runtime& rt)
    : params_(params),
      rope_(rope),
      rows_(d.rows()),
      heads_(rt.tp.share(d.heads)),
      kv_heads_(rt.tp.share(d.kv_heads)),
      head_dim_(d.head_dim),
      q_width_(heads_ * d.head_dim),
      kv_width_(kv_heads_ * d.head_dim),
      output_gate_(d.output_gate),
      scale_(1.0f / std::sqrt(static_cast<float>(d.head_dim))),
      operands_(rt.compute),
      tp_comm_(rt.tp.comm),
      decode_qkv_(DType::f32, rt.device),
      decode_qg_(DType::f32, rt.device),
      decode_qraw_(DType::f32, rt.device),
      decode_kraw_(DType::f32, rt.device),
      decode_gate_(DType::f32, rt.device),
      decode_q_(DType::f32, rt.device),
      decode_k_(DType::f32, rt.device),
      decode_out_(DType::f32, rt.device) {
  const int64_t kv_width = kv_width_, q_rows = this->q_rows();
  const int64_t q_global = (output_gate_ ? 2 : 1) * d.heads * d.head_dim,
                kv_global = d.kv_heads * d.head_dim;
  q_proj_ = params.add(prefix + "q_proj.weight", {q_rows, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, q_rows, q_global));
  k_proj_ = params.add(prefix + "k_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, kv_width, kv_global));
  v_proj_ = params.add(prefix + "v_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, kv_width, kv_global));
  if (d.qk_norm) {
    q_norm_.emplace(params, prefix + "q_norm.weight", d.head_dim, d.eps, rt, d.zero_centered_norms);
    k_norm_.emplace(params, prefix + "k_norm.weight", d.head_dim, d.eps, rt, d.zero_centered_norms);
    if (tp_comm_) tp_norm_grads_ = rt.empty({2 * d.head_dim});
  }
  o_proj_ = params.add(prefix + "o_proj.weight", {d.hidden, q_width_}, ParamKind::matrix,
                       rt.tp.shard(1, q_width_, d.heads * d.head_dim));
  const Shape q_shape{d.batch, d.seq, heads_, head_dim_};
  const Shape kv_shape{d.batch, d.seq, kv_heads_, head_dim_};
  qkv_ = rt.empty({d.rows(), q_rows + 2 * kv_width});
  dqkv_ = rt.empty(qkv_.shape());
  for (Tensor* t : {&q_, &out_, &dout_, &dq_}) *t = rt.empty(q_shape);
  for (Tensor* t : {&k_, &v_, &dk_, &dv_}) *t = rt.empty(kv_shape);
  if (output_gate_)
    for (Tensor* t : {&gate_, &gated_, &dgated_, &dgate_}) *t = rt.empty(q_shape);
  if (output_gate_) qg_ = rt.empty({d.rows(), q_rows}), dqg_ = rt.empty({d.rows(), q_rows});
  if (d.qk_norm) {
    q_raw_ = rt.empty(q_shape), dq_raw_ = rt.empty(q_shape);
    k_raw_ = rt.empty(kv_shape), dk_raw_ = rt.empty(kv_shape);
  }
  lse_ = rt.empty({d.batch, heads_, d.seq});
  row_max_ = rt.empty({d.batch, heads_, d.seq});
  max_logits_ = rt.empty({heads_});
  reset_max_logits();
}

void Attention::reset_max_logits() {
  ops::fill(max_logits_, -std::numeric_limits<float>::infinity());
}

void Attention::qk_clip(std::span<const float> gamma) {
  Tensor q = q_proj_.value();
  const int64_t stride = q_rows() / heads_;  // [q | gate] per head with the output gate
  for (int64_t h = 0; h < heads_; ++h) {
    if (gamma[static_cast<size_t>(h)] >= 1.0f) continue;
    Tensor rows = q.slice(h * stride, h * stride + head_dim_);
    ops::scale(rows, gamma[static_cast<size_t>(h)]);
  }
}

std::vector<Shape> Attention::decode_state(int64_t max_len) const {
  return {{kv_heads_, head_dim_, max_len}, {max_len, kv_heads_, head_dim_}};
}

void Attention::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  if (step)
    decode_forward(x, y, *step);
  else
    train_forward(x, y);
}

void Attention::split_projection(const Tensor& qkv, Tensor& qg, Tensor& q_raw, Tensor& q,
                                 Tensor& gate, Tensor& k_raw, Tensor& k, Tensor& v) {
  const int64_t n = qkv.rows();
  const bool norm = q_norm_.has_value();
  const Tensor q_pre = norm ? q_raw : q, k_pre = norm ? k_raw : k;
  std::array<Tensor, 3> parts{output_gate_ ? qg : q_pre.reshape({n, q_width_}),
                              k_pre.reshape({n, kv_width_}), v.reshape({n, kv_width_})};
  ops::split_cols(qkv, parts);
  if (output_gate_) {
    Tensor qh = q_pre.reshape({n, heads_, head_dim_}), gh = gate.reshape({n, heads_, head_dim_});
    ops::split_heads(qg.reshape({n, heads_, 2 * head_dim_}), qh, gh);
  }
  if (!norm) return;
  Tensor qn = q.reshape({n * heads_, head_dim_}), kn = k.reshape({n * kv_heads_, head_dim_});
  q_norm_->forward(q_raw.reshape({n * heads_, head_dim_}), qn);
  k_norm_->forward(k_raw.reshape({n * kv_heads_, head_dim_}), kn);
}

void Attention::train_forward(const Tensor& x, Tensor& y) {
  linear_forward(x, params_.fused_weight(q_proj_, v_proj_), qkv_);
  split_projection(qkv_, qg_, q_raw_, q_, gate_, k_raw_, k_, v_);
  ops::rope(q_, rope_.cos, rope_.sin, rope_.style, false);
  ops::rope(k_, rope_.cos, rope_.sin, rope_.style, false);
  ops::attention_forward(q_, k_, v_, scale_, out_, lse_, &row_max_, operands_);
  ops::head_max(row_max_, max_logits_);
  if (output_gate_) ops::sigmoid_gate(out_, gate_, gated_);
  linear_forward((output_gate_ ? gated_ : out_).reshape({rows_, q_width_}), o_proj_.weight(), y);
}

void Attention::decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step) {
  const int64_t n = x.rows(), start = step.start;
  Tensor keys_t = step.state[0];
  Tensor values = step.state[1].view(start * kv_width_, {n, kv_width_});
  Tensor qkv = decode_qkv_.rows(n, q_rows() + 2 * kv_width_);
  linear_forward(x, params_.fused_weight(q_proj_, v_proj_), qkv, &step);
  // Values go straight into their cache rows; keys after RoPE, transposed.
  // The gate's and the norms' buffers only where the options are on.
  Tensor qg = output_gate_ ? decode_qg_.rows(n, q_rows()) : Tensor{};
  Tensor gate = output_gate_ ? decode_gate_.rows(n, q_width_) : Tensor{};
  Tensor q_raw = q_norm_ ? decode_qraw_.rows(n, q_width_) : Tensor{};
  Tensor k_raw = q_norm_ ? decode_kraw_.rows(n, kv_width_) : Tensor{};
  Tensor q = decode_q_.rows(n, q_width_).reshape({1, n, heads_, head_dim_});
  Tensor k = decode_k_.rows(n, kv_width_).reshape({1, n, kv_heads_, head_dim_});
  split_projection(qkv, qg, q_raw, q, gate, k_raw, k, values);
  // RoPE at the absolute positions: the tables' rows [start, start + n).
  const Tensor cos = step.rope.cos.slice(start, start + n);
  const Tensor sin = step.rope.sin.slice(start, start + n);
  ops::rope(q, cos, sin, step.rope.style, false);
  ops::rope(k, cos, sin, step.rope.style, false);
  ops::store_keys(k.reshape({n, kv_heads_, head_dim_}), start, keys_t);
  Tensor out = decode_out_.rows(n, q_width_);
  Tensor out_heads = out.reshape({n, heads_, head_dim_});
  ops::attention_decode(q.reshape({n, heads_, head_dim_}), keys_t, step.state[1], start, out_heads);
  if (output_gate_) ops::sigmoid_gate(out, gate, out);  // elementwise: in place is safe
  linear_forward(out, o_proj_.weight(), y, &step);
}

void Attention::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor dwo = o_proj_.grad();
  if (output_gate_) {
    Tensor dgated = dgated_.reshape({rows_, q_width_});
    linear_backward(dy, gated_.reshape({rows_, q_width_}), o_proj_.weight(), dwo, dgated);
    ops::sigmoid_gate_backward(dgated_, out_, gate_, dout_, dgate_);
  } else {
    Tensor dout = dout_.reshape({rows_, q_width_});
    linear_backward(dy, out_.reshape({rows_, q_width_}), o_proj_.weight(), dwo, dout);
  }
  ops::attention_backward(dout_, q_, k_, v_, scale_, out_, lse_, dq_, dk_, dv_, operands_);
  ops::rope(dq_, rope_.cos, rope_.sin, rope_.style, true);
  ops::rope(dk_, rope_.cos, rope_.sin, rope_.style, true);
  Tensor dq_pre = dq_, dk_pre = dk_;
  if (q_norm_) {
    // Under tp the norms' gradients are this rank's heads' share: summed over the group below.
    Tensor dqn = tp_comm_ ? tp_norm_grads_.view(0, {head_dim_}) : Tensor{};
    Tensor dkn = tp_comm_ ? tp_norm_grads_.view(head_dim_, {head_dim_}) : Tensor{};
    if (tp_comm_) ops::fill(tp_norm_grads_, 0.0f);
    Tensor dq_raw = dq_raw_.reshape({rows_ * heads_, head_dim_});
    Tensor dk_raw = dk_raw_.reshape({rows_ * kv_heads_, head_dim_});
    q_norm_->backward(dq_.reshape({rows_ * heads_, head_dim_}),
                      q_raw_.reshape({rows_ * heads_, head_dim_}), dq_raw, false,
                      tp_comm_ ? &dqn : nullptr);
    k_norm_->backward(dk_.reshape({rows_ * kv_heads_, head_dim_}),
                      k_raw_.reshape({rows_ * kv_heads_, head_dim_}), dk_raw, false,
                      tp_comm_ ? &dkn : nullptr);
    dq_pre = dq_raw_, dk_pre = dk_raw_;
  }
  if (output_gate_) {
    Tensor dqg = dqg_.reshape({rows_, heads_, 2 * head_dim_});
    ops::concat_heads(dq_pre.reshape({rows_, heads_, head_dim_}),
                      dgate_.reshape({rows_, heads_, head_dim_}), dqg);
  }
  const std::array<Tensor, 3> parts{output_gate_ ? dqg_ : dq_pre.reshape({rows_, q_width_}),
                                    dk_pre.reshape({rows_, kv_width_}),
                                    dv_.reshape({rows_, kv_width_})};
  ops::concat_cols(parts, dqkv_);
  Tensor dwqkv = params_.fused_grad(q_proj_, v_proj_);
  linear_backward(dqkv_, x, params_.fused_weight(q_proj_, v_proj_), dwqkv, dx);
  if (!q_norm_ || !tp_comm_) return;
  tp_comm_->all_reduce(tp_norm_grads_);
  Tensor gq = q_norm_->weight().grad(), gk = k_norm_->weight().grad();
  ops::axpy(1.0f, tp_norm_grads_.view(0, {head_dim_}), gq);
  ops::axpy(1.0f, tp_norm_grads_.view(head_dim_, {head_dim_}), gk);
}

}  // namespace moetron
