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
      scale_(1.0f / std::sqrt(static_cast<float>(d.head_dim))),
      decode_qkv_(DType::f32, rt.device),
      decode_q_(DType::f32, rt.device),
      decode_k_(DType::f32, rt.device),
      decode_out_(DType::f32, rt.device) {
  const int64_t q_width = q_width_, kv_width = kv_width_;
  const int64_t q_global = d.heads * d.head_dim, kv_global = d.kv_heads * d.head_dim;
  q_proj_ = params.add(prefix + "q_proj.weight", {q_width, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, q_width, q_global));
  k_proj_ = params.add(prefix + "k_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, kv_width, kv_global));
  v_proj_ = params.add(prefix + "v_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       rt.tp.shard(0, kv_width, kv_global));
  o_proj_ = params.add(prefix + "o_proj.weight", {d.hidden, q_width}, ParamKind::matrix,
                       rt.tp.shard(1, q_width, q_global));
  const Shape q_shape{d.batch, d.seq, heads_, head_dim_};
  const Shape kv_shape{d.batch, d.seq, kv_heads_, head_dim_};
  qkv_ = rt.empty({d.rows(), q_width + 2 * kv_width});
  dqkv_ = rt.empty(qkv_.shape());
  for (Tensor* t : {&q_, &out_, &dout_, &dq_}) *t = rt.empty(q_shape);
  for (Tensor* t : {&k_, &v_, &dk_, &dv_}) *t = rt.empty(kv_shape);
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
  for (int64_t h = 0; h < heads_; ++h) {
    if (gamma[static_cast<size_t>(h)] >= 1.0f) continue;
    Tensor rows = q.slice(h * head_dim_, (h + 1) * head_dim_);
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

void Attention::train_forward(const Tensor& x, Tensor& y) {
  linear_forward(x, params_.fused_value(q_proj_, v_proj_), qkv_);
  std::array<Tensor, 3> parts{q_.reshape({rows_, q_width_}), k_.reshape({rows_, kv_width_}),
                              v_.reshape({rows_, kv_width_})};
  ops::split_cols(qkv_, parts);
  ops::rope(q_, rope_.cos, rope_.sin, rope_.style, false);
  ops::rope(k_, rope_.cos, rope_.sin, rope_.style, false);
  ops::attention_forward(q_, k_, v_, scale_, out_, lse_, &row_max_);
  ops::head_max(row_max_, max_logits_);
  linear_forward(out_.reshape({rows_, q_width_}), o_proj_.value(), y);
}

void Attention::decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step) {
  const int64_t n = x.rows(), start = step.start;
  Tensor keys_t = step.state[0];
  const Tensor& values = step.state[1];
  Tensor qkv = decode_qkv_.rows(n, q_width_ + 2 * kv_width_);
  linear_forward(x, params_.fused_value(q_proj_, v_proj_), qkv, &step);
  // Values go straight into their cache rows; keys after RoPE, transposed.
  std::array<Tensor, 3> parts{decode_q_.rows(n, q_width_), decode_k_.rows(n, kv_width_),
                              values.view(start * kv_width_, {n, kv_width_})};
  ops::split_cols(qkv, parts);
  // RoPE at the absolute positions: the tables' rows [start, start + n).
  const Tensor cos = step.rope.cos.slice(start, start + n);
  const Tensor sin = step.rope.sin.slice(start, start + n);
  Tensor q = parts[0].reshape({1, n, heads_, head_dim_});
  Tensor k = parts[1].reshape({1, n, kv_heads_, head_dim_});
  ops::rope(q, cos, sin, step.rope.style, false);
  ops::rope(k, cos, sin, step.rope.style, false);
  ops::store_keys(k.reshape({n, kv_heads_, head_dim_}), start, keys_t);
  Tensor out = decode_out_.rows(n, q_width_);
  Tensor out_heads = out.reshape({n, heads_, head_dim_});
  ops::attention_decode(q.reshape({n, heads_, head_dim_}), keys_t, values, start, out_heads);
  linear_forward(out, o_proj_.value(), y, &step);
}

void Attention::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor dout_2d = dout_.reshape({rows_, q_width_});
  Tensor dwo = o_proj_.grad();
  linear_backward(dy, out_.reshape({rows_, q_width_}), o_proj_.value(), dwo, dout_2d);
  ops::attention_backward(dout_, q_, k_, v_, scale_, out_, lse_, dq_, dk_, dv_);
  ops::rope(dq_, rope_.cos, rope_.sin, rope_.style, true);
  ops::rope(dk_, rope_.cos, rope_.sin, rope_.style, true);
  const std::array<Tensor, 3> parts{dq_.reshape({rows_, q_width_}), dk_.reshape({rows_, kv_width_}),
                                    dv_.reshape({rows_, kv_width_})};
  ops::concat_cols(parts, dqkv_);
  Tensor dwqkv = params_.fused_grad(q_proj_, v_proj_);
  linear_backward(dqkv_, x, params_.fused_value(q_proj_, v_proj_), dwqkv, dx);
}

}  // namespace moetron
