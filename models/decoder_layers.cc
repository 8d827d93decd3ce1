#include "models/decoder_layers.h"

#include <array>

#include "core/ops_decode.h"
#include "models/linear.h"

namespace moetron {
namespace {

// Parameters first..last as one [rows, cols] matrix, as the training layers fuse them (q|k|v,
// gate|up; ParamTable::fused checks that they lie back to back).
Tensor fused_param(const ParamTable& params, const std::string& first, const std::string& last) {
  return params.fused_value(decoder_param(params, first), decoder_param(params, last));
}

// A [rows, cols] i32 view of a grow-only buffer (RowBuffer is f32).
Tensor i32_rows(Tensor& storage, int64_t rows, int64_t cols) {
  if (!storage.defined() || storage.numel() < rows * cols)
    storage = Tensor::empty({rows * cols + rows * cols / 4}, DType::i32);
  return storage.view(0, {rows, cols});
}

}  // namespace

DecodeWeight DecodeWeight::of(const Tensor& w) {
  DecodeWeight d{w, Tensor::empty({w.cols(), w.rows()})};
  ops::transpose(w, d.wt);
  return d;
}

void decode_linear(const Tensor& x, const DecodeWeight& w, Tensor& y, int64_t positions) {
  if (positions <= kFixedOrderRows)
    ops::linear_rows(x, w.wt, y);
  else
    linear_forward(x, w.w, y);
}

ParamRef decoder_param(const ParamTable& params, const std::string& name) {
  const int id = params.find(name);
  if (id < 0) throw Error(detail::concat("decoder: the model has no tensor ", name));
  return ParamRef(&params, id);
}

DecoderNorm::DecoderNorm(const ParamTable& params, const std::string& name, float eps)
    : weight_(decoder_param(params, name)), eps_(eps) {}

void DecoderNorm::forward(const Tensor& x, Tensor& y) {
  Tensor rstd = rstd_.rows(x.rows(), 1);
  ops::rmsnorm_forward(x, weight_.value(), eps_, y, rstd);
}

DecoderAttention::DecoderAttention(const ParamTable& params, const std::string& prefix,
                                   const ModelDims& d, const RopeTables& rope)
    : rope_(rope),
      heads_(d.heads),
      kv_heads_(d.kv_heads),
      head_dim_(d.head_dim),
      qkv_weight_(DecodeWeight::of(
          fused_param(params, prefix + "q_proj.weight", prefix + "v_proj.weight"))),
      o_weight_(DecodeWeight::of(decoder_param(params, prefix + "o_proj.weight").value())) {}

void DecoderAttention::forward(const Tensor& x, int64_t start, Tensor& keys_t, Tensor& values,
                               Tensor& y) {
  const int64_t n = x.rows(), q_width = heads_ * head_dim_, kv_width = kv_heads_ * head_dim_;
  Tensor qkv = qkv_.rows(n, q_width + 2 * kv_width);
  decode_linear(x, qkv_weight_, qkv, n);
  // Values go straight into their cache rows; keys after RoPE, transposed.
  std::array<Tensor, 3> parts{q_.rows(n, q_width), k_.rows(n, kv_width),
                              values.view(start * kv_width, {n, kv_width})};
  ops::split_cols(qkv, parts);
  // RoPE at the absolute positions: the tables' rows [start, start + n).
  const Tensor cos = rope_.cos.slice(start, start + n), sin = rope_.sin.slice(start, start + n);
  Tensor q = parts[0].reshape({1, n, heads_, head_dim_});
  Tensor k = parts[1].reshape({1, n, kv_heads_, head_dim_});
  ops::rope(q, cos, sin, rope_.style, false);
  ops::rope(k, cos, sin, rope_.style, false);
  ops::store_keys(k.reshape({n, kv_heads_, head_dim_}), start, keys_t);
  Tensor out = out_.rows(n, q_width);
  Tensor out_heads = out.reshape({n, heads_, head_dim_});
  ops::attention_decode(q.reshape({n, heads_, head_dim_}), keys_t, values, start, out_heads);
  decode_linear(out, o_weight_, y, n);
}

DecoderSwiGLU::DecoderSwiGLU(const ParamTable& params, const std::string& prefix)
    : gate_up_weight_(DecodeWeight::of(
          fused_param(params, prefix + "gate_proj.weight", prefix + "up_proj.weight"))),
      down_weight_(DecodeWeight::of(decoder_param(params, prefix + "down_proj.weight").value())) {}

void DecoderSwiGLU::forward(const Tensor& x, Tensor& y) {
  const int64_t width = gate_up_weight_.w.rows();
  Tensor gate_up = gate_up_.rows(x.rows(), width), act = act_.rows(x.rows(), width / 2);
  decode_linear(x, gate_up_weight_, gate_up, x.rows());
  ops::swiglu_forward(gate_up, act);
  decode_linear(act, down_weight_, y, x.rows());
}

DecoderMoE::DecoderMoE(const ParamTable& params, const std::string& prefix, const ModelDims& d)
    : hidden_(d.hidden),
      inter_(d.moe.intermediate),
      gate_weight_(DecodeWeight::of(decoder_param(params, prefix + "gate.weight").value())),
      bias_(decoder_param(params, prefix + "gate.e_score_correction_bias").value()) {
  const MoeDims& m = d.moe;
  router_ = {m.experts, m.k, m.n_group, m.topk_group, m.scoring, m.norm_topk_prob, m.scaling};
  for (int64_t e = 0; e < m.experts; ++e) {
    const std::string p = prefix + "experts." + std::to_string(e) + ".";
    const DecodeWeight gate_up =
        DecodeWeight::of(fused_param(params, p + "gate_proj.weight", p + "up_proj.weight"));
    const DecodeWeight down =
        DecodeWeight::of(decoder_param(params, p + "down_proj.weight").value());
    gate_up_.push_back(gate_up.w);
    gate_up_t_.push_back(gate_up.wt);
    down_.push_back(down.w);
    down_t_.push_back(down.wt);
  }
  if (m.shared > 0) shared_ = std::make_unique<DecoderSwiGLU>(params, prefix + "shared_experts.");
}

void DecoderMoE::forward(const Tensor& x, Tensor& y) {
  // The training MoE's single-rank path (models/moe.cc) without capacity and statistics.
  const int64_t n = x.rows(), k = router_.k, experts = router_.experts;
  Tensor logits = logits_.rows(n, experts), scores = scores_.rows(n, experts);
  Tensor topk = i32_rows(topk_storage_, n, k), gates = gates_.rows(n, k);
  decode_linear(x, gate_weight_, logits, n);
  ops::router_forward(logits, bias_, router_, scores, topk, gates);
  // The plan's buffers, grown to the largest n seen; this call's plan views n * k of them.
  if (!plan_buffers_.slot_row.defined() || plan_buffers_.slot_row.numel() < n * k)
    plan_buffers_ = ops::make_dispatch_plan(n + n / 4, k, experts);
  ops::DispatchPlan plan{plan_buffers_.counts, plan_buffers_.offsets,
                         plan_buffers_.row_token.view(0, {n * k}),
                         plan_buffers_.slot_row.view(0, {n * k})};
  ops::plan_dispatch(topk, scores, /*capacity=*/0, plan);
  const int64_t rows = plan.rows;
  Tensor in = rows_in_.rows(rows, hidden_), gate_up = rows_gate_up_.rows(rows, 2 * inter_);
  Tensor act = rows_act_.rows(rows, inter_), out = rows_out_.rows(rows, hidden_);
  ops::gather_rows(x, plan.row_tokens(), in);
  if (n <= kFixedOrderRows) {
    ops::grouped_linear_rows(in, gate_up_t_, plan.offsets, gate_up);
    ops::swiglu_forward(gate_up, act);
    ops::grouped_linear_rows(act, down_t_, plan.offsets, out);
  } else {
    ops::grouped_matmul(in, gate_up_, plan.offsets, gate_up);
    ops::swiglu_forward(gate_up, act);
    ops::grouped_matmul(act, down_, plan.offsets, out);
  }
  if (shared_) shared_->forward(x, y);
  ops::combine_rows(out, plan.slot_row, gates, k, y, /*accumulate=*/shared_ != nullptr);
}

DecoderBlock::DecoderBlock(const ParamTable& params, const std::string& prefix, const ModelDims& d,
                           const RopeTables& rope, bool moe)
    : input_norm_(params, prefix + "input_layernorm.weight", d.eps),
      post_attn_norm_(params, prefix + "post_attention_layernorm.weight", d.eps),
      attn_(params, prefix + "self_attn.", d, rope) {
  if (moe)
    mlp_ = std::make_unique<DecoderMoE>(params, prefix + "mlp.", d);
  else
    mlp_ = std::make_unique<DecoderSwiGLU>(params, prefix + "mlp.");
}

void DecoderBlock::forward(const Tensor& x, int64_t start, Tensor keys_t, Tensor values,
                           Tensor& y) {
  const int64_t n = x.rows(), d = x.cols();
  Tensor xn = xn_.rows(n, d), attn_out = attn_out_.rows(n, d), h = h_.rows(n, d);
  Tensor hn = hn_.rows(n, d), mlp_out = mlp_out_.rows(n, d);
  input_norm_.forward(x, xn);
  attn_.forward(xn, start, keys_t, values, attn_out);
  ops::add(x, attn_out, h);
  post_attn_norm_.forward(h, hn);
  mlp_->forward(hn, mlp_out);
  ops::add(h, mlp_out, y);
}

}  // namespace moetron
