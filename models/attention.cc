#include "models/attention.h"

#include <array>

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

RopeTables RopeTables::make(const ModelDims& d) {
  RopeTables r{Tensor::empty({d.seq, d.head_dim / 2}), Tensor::empty({d.seq, d.head_dim / 2}),
               d.rope_style};
  ops::rope_tables(d.seq, d.head_dim, d.rope_theta, r.cos, r.sin);
  return r;
}

Attention::Attention(ParamTable& params, const std::string& prefix, const ModelDims& d,
                     const RopeTables& rope)
    : params_(params),
      rope_(rope),
      rows_(d.rows()),
      q_width_(d.local_heads() * d.head_dim),
      kv_width_(d.local_kv_heads() * d.head_dim) {
  const int64_t q_width = q_width_, kv_width = kv_width_;
  const int64_t q_global = d.heads * d.head_dim, kv_global = d.kv_heads * d.head_dim;
  q_proj_ = params.add(prefix + "q_proj.weight", {q_width, d.hidden}, ParamKind::matrix,
                       d.tp_shard(0, q_width, q_global));
  k_proj_ = params.add(prefix + "k_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       d.tp_shard(0, kv_width, kv_global));
  v_proj_ = params.add(prefix + "v_proj.weight", {kv_width, d.hidden}, ParamKind::matrix,
                       d.tp_shard(0, kv_width, kv_global));
  o_proj_ = params.add(prefix + "o_proj.weight", {d.hidden, q_width}, ParamKind::matrix,
                       d.tp_shard(1, q_width, q_global));
  const Shape q_shape{d.batch, d.seq, d.local_heads(), d.head_dim};
  const Shape kv_shape{d.batch, d.seq, d.local_kv_heads(), d.head_dim};
  qkv_ = Tensor::empty({d.rows(), q_width + 2 * kv_width});
  dqkv_ = Tensor::empty(qkv_.shape());
  for (Tensor* t : {&q_, &out_, &dout_, &dq_}) *t = Tensor::empty(q_shape);
  for (Tensor* t : {&k_, &v_, &dk_, &dv_}) *t = Tensor::empty(kv_shape);
  lse_ = Tensor::empty({d.batch, d.local_heads(), d.seq});
}

void Attention::forward(const Tensor& x, Tensor& y) {
  linear_forward(x, params_.fused_value(q_proj_, v_proj_), qkv_);
  std::array<Tensor, 3> parts{q_.reshape({rows_, q_width_}), k_.reshape({rows_, kv_width_}),
                              v_.reshape({rows_, kv_width_})};
  ops::split_cols(qkv_, parts);
  ops::rope(q_, rope_.cos, rope_.sin, rope_.style, false);
  ops::rope(k_, rope_.cos, rope_.sin, rope_.style, false);
  ops::attention_forward(q_, k_, v_, out_, lse_);
  linear_forward(out_.reshape({rows_, q_width_}), o_proj_.value(), y);
}

void Attention::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor dout_2d = dout_.reshape({rows_, q_width_});
  Tensor dwo = o_proj_.grad();
  linear_backward(dy, out_.reshape({rows_, q_width_}), o_proj_.value(), dwo, dout_2d);
  ops::attention_backward(dout_, q_, k_, v_, out_, lse_, dq_, dk_, dv_);
  ops::rope(dq_, rope_.cos, rope_.sin, rope_.style, true);
  ops::rope(dk_, rope_.cos, rope_.sin, rope_.style, true);
  const std::array<Tensor, 3> parts{dq_.reshape({rows_, q_width_}), dk_.reshape({rows_, kv_width_}),
                                    dv_.reshape({rows_, kv_width_})};
  ops::concat_cols(parts, dqkv_);
  Tensor dwqkv = params_.fused_grad(q_proj_, v_proj_);
  linear_backward(dqkv_, x, params_.fused_value(q_proj_, v_proj_), dwqkv, dx);
}

}  // namespace moetron
