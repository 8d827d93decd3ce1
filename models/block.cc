#include "models/block.h"

#include "core/ops.h"
#include "models/swiglu.h"

namespace moetron {

namespace {
std::unique_ptr<FeedForward> make_mlp(ParamTable& params, const std::string& prefix,
                                      const ModelDims& d, bool moe, const Runtime& rt) {
  if (moe) return std::make_unique<MoE>(params, prefix, d, rt);
  return std::make_unique<SwiGLU>(params, prefix, d, d.intermediate, rt);
}
}  // namespace

Block::Block(ParamTable& params, const std::string& prefix, const ModelDims& d,
             const RopeTables& rope, MixerKind mixer, bool moe, const Runtime& rt)
    : input_norm_(params, prefix + "input_layernorm.weight", d.hidden, d.eps, rt,
                  d.zero_centered_norms),
      mixer_(
          make_mixer(mixer, params,
                     prefix + (mixer == MixerKind::gated_deltanet ? "linear_attn." : "self_attn."),
                     d, rope, rt)),
      post_attn_norm_(params, prefix + "post_attention_layernorm.weight", d.hidden, d.eps, rt,
                      d.zero_centered_norms),
      mlp_(make_mlp(params, prefix + "mlp.", d, moe, rt)),
      moe_(moe ? static_cast<MoE*>(mlp_.get()) : nullptr),
      tp_comm_(rt.tp.comm),
      xn_buf_(DType::f32, rt.device),
      attn_out_buf_(DType::f32, rt.device),
      h_buf_(DType::f32, rt.device),
      hn_buf_(DType::f32, rt.device),
      mlp_out_buf_(DType::f32, rt.device) {
  for (Tensor* t : {&dh_, &dnorm_}) *t = rt.empty({d.rows(), d.hidden});
}

void Block::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  MOETRON_CHECK(!(step && tp_comm_), "decoding runs on one rank");
  const int64_t n = x.rows(), d = x.cols();
  xn_ = xn_buf_.rows(n, d), h_ = h_buf_.rows(n, d), hn_ = hn_buf_.rows(n, d);
  Tensor attn_out = attn_out_buf_.rows(n, d), mlp_out = mlp_out_buf_.rows(n, d);
  input_norm_.forward(x, xn_);
  if (step)
    mixer_->forward(xn_, attn_out, *step);
  else
    mixer_->forward(xn_, attn_out);
  sum_over_tp(attn_out);
  ops::add(x, attn_out, h_);
  post_attn_norm_.forward(h_, hn_);
  if (step)
    mlp_->forward(hn_, mlp_out, *step);
  else
    mlp_->forward(hn_, mlp_out);
  sum_over_tp(mlp_out);
  ops::add(h_, mlp_out, y);
}

void Block::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  // Residuals pass dy straight through; each branch adds its part through its norm.
  mlp_->backward(dy, hn_, dnorm_);
  sum_over_tp(dnorm_);
  ops::copy(dy, dh_);
  post_attn_norm_.backward(dnorm_, h_, dh_, /*accumulate_dx=*/true);
  mixer_->backward(dh_, xn_, dnorm_);
  sum_over_tp(dnorm_);
  ops::copy(dh_, dx);
  input_norm_.backward(dnorm_, x, dx, /*accumulate_dx=*/true);
}

}  // namespace moetron
