#include "models/mla.h"

#include <array>
#include <cmath>
#include <limits>

#include "core/ops.h"
#include "core/ops_decode.h"
#include "models/linear.h"

namespace moetron {
namespace {

// The latent norms' epsilon: DeepSeek-V3's reference code and Hugging Face's DeepseekV3Attention
// build q_a_layernorm and kv_a_layernorm with 1e-6 whatever rms_norm_eps says.
constexpr float kLatentEps = 1e-6f;

// y = x w for w [in, out] (the absorbed products): the GEMM, or decoding a short chunk the
// fixed-order kernel, whose transposed-weight argument w already is.
void absorb(const Tensor& x, const Tensor& w, Tensor& y, const DecodeStep& step) {
  if (step.fixed_order)
    ops::linear_rows(x, w, y);
  else
    ops::matmul(x, false, w, false, y);
}

}  // namespace

Mla::Mla(ParamTable& params, const std::string& prefix, const ModelDims& d, const RopeTables& rope,
         const Runtime& rt)
    : params_(params),
      rope_(rope),
      dims_(d.mla),
      batch_(d.batch),
      seq_(d.seq),
      rows_(d.rows()),
      heads_(rt.tp.share(d.heads)),
      scale_(1.0f / std::sqrt(static_cast<float>(d.mla.qk())) * yarn_softmax_factor(d.yarn)),
      operands_(rt.compute),
      tp_comm_(rt.tp.comm),
      kv_norm_(params, prefix + "kv_a_layernorm.weight", d.mla.kv_lora, kLatentEps, rt),
      d_down_(DType::f32, rt.device),
      d_cq_(DType::f32, rt.device),
      d_c_(DType::f32, rt.device),
      d_kr_(DType::f32, rt.device),
      d_cqn_(DType::f32, rt.device),
      d_q_(DType::f32, rt.device),
      d_cn_(DType::f32, rt.device),
      d_qh_(DType::f32, rt.device),
      d_qc_(DType::f32, rt.device),
      d_qr_(DType::f32, rt.device),
      d_qt_(DType::f32, rt.device),
      d_qabs_(DType::f32, rt.device),
      d_lat_(DType::f32, rt.device),
      d_oh_(DType::f32, rt.device),
      d_o_(DType::f32, rt.device) {
  const MlaDims& a = dims_;
  const int64_t H = heads_, qk_width = H * a.qk(), latent = a.kv_lora + a.rope;
  if (q_lora()) {
    q_down_ = params.add(prefix + "q_a_proj.weight", {a.q_lora, d.hidden}, ParamKind::matrix);
  } else {
    q_down_ = params.add(prefix + "q_proj.weight", {qk_width, d.hidden}, ParamKind::matrix,
                         rt.tp.shard(0, qk_width, d.heads * a.qk()));
  }
  kv_down_ =
      params.add(prefix + "kv_a_proj_with_mqa.weight", {latent, d.hidden}, ParamKind::matrix);
  if (q_lora()) {
    q_norm_.emplace(params, prefix + "q_a_layernorm.weight", a.q_lora, kLatentEps, rt);
    q_b_ = params.add(prefix + "q_b_proj.weight", {qk_width, a.q_lora}, ParamKind::matrix,
                      rt.tp.shard(0, qk_width, d.heads * a.qk()));
  }
  // (kv_norm_, a member, registered its weight before this body ran: of the registration order
  // only the adjacency of q_down_ and kv_down_ matters, for the fused GEMM.)
  const int64_t kvb_width = H * (a.nope + a.v);
  kv_b_ = params.add(prefix + "kv_b_proj.weight", {kvb_width, a.kv_lora}, ParamKind::matrix,
                     rt.tp.shard(0, kvb_width, d.heads * (a.nope + a.v)));
  o_proj_ = params.add(prefix + "o_proj.weight", {d.hidden, H * a.v}, ParamKind::matrix,
                       rt.tp.shard(1, H * a.v, d.heads * a.v));

  const int64_t rows = rows_, down = q_down_width() + latent;
  const Shape heads_qk{d.batch, d.seq, H, a.qk()}, heads_v{d.batch, d.seq, H, a.v};
  down_ = rt.empty({rows, down});
  ddown_ = rt.empty({rows, down});
  c_ = rt.empty({rows, a.kv_lora});
  kr_ = rt.empty({rows, a.rope});
  if (q_lora()) {
    cq_ = rt.empty({rows, a.q_lora});
    cqn_ = rt.empty({rows, a.q_lora});
    dcqn_ = rt.empty({rows, a.q_lora});
    dcq_ = rt.empty({rows, a.q_lora});
  }
  q_ = rt.empty({rows, qk_width});
  cn_ = rt.empty({rows, a.kv_lora});
  kvb_ = rt.empty({rows, kvb_width});
  qc_ = rt.empty({rows, H, a.nope});
  qr_ = rt.empty({rows, H, a.rope});
  kc_ = rt.empty({rows, H, a.nope});
  for (Tensor* t : {&qf_, &kf_, &dqf_, &dkf_}) *t = rt.empty(heads_qk);
  for (Tensor* t : {&v_, &out_, &dout_, &dv_}) *t = rt.empty(heads_v);
  lse_ = rt.empty({d.batch, H, d.seq});
  row_max_ = rt.empty({d.batch, H, d.seq});
  max_logits_ = rt.empty({H});
  reset_max_logits();
  dkc_ = rt.empty({rows, H, a.nope});
  dkr_ = rt.empty({rows, 1, a.rope});
  dkvb_ = rt.empty({rows, kvb_width});
  dcn_ = rt.empty({rows, a.kv_lora});
  dc_ = rt.empty({rows, a.kv_lora});
  dqc_ = rt.empty({rows, H, a.nope});
  dqr_ = rt.empty({rows, H, a.rope});
  dq_ = rt.empty({rows, qk_width});
  if (tp_comm_) tp_grads_ = rt.empty({down * d.hidden + (q_lora() ? a.q_lora : 0) + a.kv_lora});
}

void Mla::reset_max_logits() {
  ops::fill(max_logits_, -std::numeric_limits<float>::infinity());
}

void Mla::qk_clip(std::span<const float> gamma) {
  const MlaDims& a = dims_;
  Tensor q = q_lora() ? q_b_.value() : q_down_.value(), kv_b = kv_b_.value();
  for (int64_t h = 0; h < heads_; ++h) {
    const float g = gamma[static_cast<size_t>(h)];
    if (g >= 1.0f) continue;
    const int64_t q0 = h * a.qk(), k0 = h * (a.nope + a.v);
    Tensor q_c = q.slice(q0, q0 + a.nope), q_r = q.slice(q0 + a.nope, q0 + a.qk());
    Tensor k_c = kv_b.slice(k0, k0 + a.nope);
    ops::scale(q_c, std::sqrt(g));
    ops::scale(k_c, std::sqrt(g));
    ops::scale(q_r, g);
  }
}

std::vector<Shape> Mla::decode_state(int64_t max_len) const {
  return {{max_len, dims_.kv_lora + dims_.rope}};
}

void Mla::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  if (step)
    decode_forward(x, y, *step);
  else
    train_forward(x, y);
}

void Mla::train_forward(const Tensor& x, Tensor& y) {
  const MlaDims& a = dims_;
  const int64_t H = heads_, rows = rows_;
  linear_forward(x, params_.fused_weight(q_down_, kv_down_), down_);
  std::array<Tensor, 3> parts{q_lora() ? cq_ : q_, c_, kr_};
  ops::split_cols(down_, parts);
  if (q_lora()) {
    q_norm_->forward(cq_, cqn_);
    linear_forward(cqn_, q_b_.weight(), q_);
  }
  kv_norm_.forward(c_, cn_);
  linear_forward(cn_, kv_b_.weight(), kvb_);
  // RoPE on the query's rope part of every head and on the one shared key.
  Tensor q_heads = q_.reshape({rows, H, a.qk()});
  ops::split_heads(q_heads, qc_, qr_);
  Tensor qr = qr_.reshape({batch_, seq_, H, a.rope});
  ops::rope(qr, rope_.cos, rope_.sin, rope_.style, false);
  Tensor kr = kr_.reshape({batch_, seq_, 1, a.rope});
  ops::rope(kr, rope_.cos, rope_.sin, rope_.style, false);
  Tensor qf = qf_.reshape({rows, H, a.qk()}), kf = kf_.reshape({rows, H, a.qk()});
  ops::concat_heads(qc_, qr_, qf);
  Tensor v = v_.reshape({rows, H, a.v});
  ops::split_heads(kvb_.reshape({rows, H, a.nope + a.v}), kc_, v);
  ops::concat_heads(kc_, kr_.reshape({rows, 1, a.rope}), kf);
  ops::attention_forward(qf_, kf_, v_, scale_, out_, lse_, &row_max_, operands_);
  ops::head_max(row_max_, max_logits_);
  linear_forward(out_.reshape({rows, H * a.v}), o_proj_.weight(), y);
}

void Mla::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  const MlaDims& a = dims_;
  const int64_t H = heads_, rows = rows_, hidden = x.cols();
  const int64_t down = q_down_width() + a.kv_lora + a.rope;
  // The replicated weights' gradients: straight into the parameters' on one rank; into
  // tp_grads_ (reduced below) under tensor parallelism.
  Tensor d_down_w = params_.fused_grad(q_down_, kv_down_);
  Tensor d_qnorm, d_kvnorm;
  if (tp_comm_) {
    ops::fill(tp_grads_, 0.0f);
    d_down_w = tp_grads_.view(0, {down, hidden});
    int64_t at = down * hidden;
    if (q_lora()) {
      d_qnorm = tp_grads_.view(at, {a.q_lora});
      at += a.q_lora;
    }
    d_kvnorm = tp_grads_.view(at, {a.kv_lora});
  }
  Tensor dout = dout_.reshape({rows, H * a.v}), dwo = o_proj_.grad();
  linear_backward(dy, out_.reshape({rows, H * a.v}), o_proj_.weight(), dwo, dout);
  ops::attention_backward(dout_, qf_, kf_, v_, scale_, out_, lse_, dqf_, dkf_, dv_, operands_);
  // Keys: [k_C | k_R] per head; k_R's gradient is the sum over the heads.
  ops::split_heads(dkf_.reshape({rows, H, a.qk()}), dkc_, dkr_);
  Tensor dkvb = dkvb_.reshape({rows, H, a.nope + a.v});
  ops::concat_heads(dkc_, dv_.reshape({rows, H, a.v}), dkvb);
  Tensor dwkvb = kv_b_.grad();
  linear_backward(dkvb_, cn_, kv_b_.weight(), dwkvb, dcn_);
  kv_norm_.backward(dcn_, c_, dc_, /*accumulate_dx=*/false, tp_comm_ ? &d_kvnorm : nullptr);
  Tensor dkr = dkr_.reshape({batch_, seq_, 1, a.rope});
  ops::rope(dkr, rope_.cos, rope_.sin, rope_.style, true);
  // Queries.
  ops::split_heads(dqf_.reshape({rows, H, a.qk()}), dqc_, dqr_);
  Tensor dqr = dqr_.reshape({batch_, seq_, H, a.rope});
  ops::rope(dqr, rope_.cos, rope_.sin, rope_.style, true);
  Tensor dq = dq_.reshape({rows, H, a.qk()});
  ops::concat_heads(dqc_, dqr_, dq);
  if (q_lora()) {
    Tensor dwqb = q_b_.grad();
    linear_backward(dq_, cqn_, q_b_.weight(), dwqb, dcqn_);
    q_norm_->backward(dcqn_, cq_, dcq_, /*accumulate_dx=*/false, tp_comm_ ? &d_qnorm : nullptr);
  }
  const std::array<Tensor, 3> parts{q_lora() ? dcq_ : dq_, dc_, dkr_.reshape({rows, a.rope})};
  ops::concat_cols(parts, ddown_);
  linear_backward(ddown_, x, params_.fused_weight(q_down_, kv_down_), d_down_w, dx);
  if (!tp_comm_) return;
  // Sum the replicated weights' shares over the group: from kv_a_proj_with_mqa on (q_proj's
  // rows, without a q LoRA, are this rank's heads' own), then add them to the gradients.
  const int64_t first = q_lora() ? 0 : q_down_width() * hidden;
  Tensor replicated = tp_grads_.slice(first, tp_grads_.numel());
  tp_comm_->all_reduce(replicated);
  Tensor g_down = params_.fused_grad(q_down_, kv_down_);
  ops::axpy(1.0f, d_down_w, g_down);
  if (q_lora()) {
    Tensor g = q_norm_->weight().grad();
    ops::axpy(1.0f, d_qnorm, g);
  }
  Tensor g = kv_norm_.weight().grad();
  ops::axpy(1.0f, d_kvnorm, g);
}

void Mla::decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step) {
  const MlaDims& a = dims_;
  const int64_t H = heads_, n = x.rows(), start = step.start, latent = a.kv_lora + a.rope;
  Tensor down = d_down_.rows(n, q_down_width() + latent);
  linear_forward(x, params_.fused_weight(q_down_, kv_down_), down, &step);
  Tensor q = d_q_.rows(n, H * a.qk()), c = d_c_.rows(n, a.kv_lora), kr = d_kr_.rows(n, a.rope);
  Tensor cq = q_lora() ? d_cq_.rows(n, a.q_lora) : q;
  std::array<Tensor, 3> parts{cq, c, kr};
  ops::split_cols(down, parts);
  if (q_lora()) {
    Tensor cqn = d_cqn_.rows(n, a.q_lora);
    q_norm_->forward(cq, cqn);
    linear_forward(cqn, q_b_.weight(), q, &step);
  }
  const Tensor cos = step.rope.cos.slice(start, start + n);
  const Tensor sin = step.rope.sin.slice(start, start + n);
  // The cache rows of these positions: [c'_KV | RoPE(k_R)].
  Tensor cache = step.state[0];
  Tensor cn = d_cn_.rows(n, a.kv_lora);
  kv_norm_.forward(c, cn);
  Tensor kr4 = kr.reshape({1, n, 1, a.rope});
  ops::rope(kr4, cos, sin, step.rope.style, false);
  Tensor rows = cache.view(start * latent, {n, latent});
  const std::array<Tensor, 2> cached{cn, kr};
  ops::concat_cols(cached, rows);
  // Queries head-major [H, n, qk]: q_C absorbs W_UK (q~ = q_C W_UK, W_UK [nope, kv_lora] the
  // head's first nope rows of kv_b_proj), q_R is rotated.
  Tensor qh = d_qh_.rows(H * n, a.qk());
  Tensor qh3 = qh.reshape({H, n, a.qk()});
  ops::transpose01(q.reshape({n, H, a.qk()}), qh3);
  Tensor qc = d_qc_.rows(H * n, a.nope), qr = d_qr_.rows(H * n, a.rope);
  std::array<Tensor, 2> q_parts{qc, qr};
  ops::split_cols(qh, q_parts);
  Tensor qr4 = qr.reshape({H, n, 1, a.rope});
  ops::rope(qr4, cos, sin, step.rope.style, false);
  const Tensor kv_b = kv_b_.value();
  const int64_t per_head = a.nope + a.v;
  Tensor qt = d_qt_.rows(H * n, a.kv_lora);
  for (int64_t h = 0; h < H; ++h) {
    Tensor qt_h = qt.slice(h * n, (h + 1) * n);
    absorb(qc.slice(h * n, (h + 1) * n), kv_b.slice(h * per_head, h * per_head + a.nope), qt_h,
           step);
  }
  Tensor qabs = d_qabs_.rows(H * n, latent);
  const std::array<Tensor, 2> abs_parts{qt, qr};
  ops::concat_cols(abs_parts, qabs);
  Tensor lat = d_lat_.rows(H * n, a.kv_lora);
  Tensor lat3 = lat.reshape({H, n, a.kv_lora});
  ops::attention_decode_latent(qabs.reshape({H, n, latent}), cache, start, scale_, lat3);
  // Each head's W_UV [v, kv_lora] (the head's last v rows of kv_b_proj) expands its result.
  Tensor oh = d_oh_.rows(H * n, a.v);
  for (int64_t h = 0; h < H; ++h) {
    Tensor oh_h = oh.slice(h * n, (h + 1) * n);
    linear_forward(lat.slice(h * n, (h + 1) * n),
                   kv_b.slice(h * per_head + a.nope, (h + 1) * per_head), oh_h, &step);
  }
  Tensor o = d_o_.rows(n, H * a.v);
  Tensor o3 = o.reshape({n, H, a.v});
  ops::transpose01(oh.reshape({H, n, a.v}), o3);
  linear_forward(o, o_proj_.weight(), y, &step);
}

}  // namespace moetron
