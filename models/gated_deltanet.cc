#include "models/gated_deltanet.h"

#include <array>
#include <cmath>

#include "core/ops.h"
#include "core/ops_linear_attention.h"
#include "models/linear.h"

namespace moetron {
namespace {

// The L2 norm's epsilon inside the root (fla's and Hugging Face's l2norm), whatever rms_norm_eps.
constexpr float kL2Eps = 1e-6f;

}  // namespace

GatedDeltaNet::GatedDeltaNet(ParamTable& params, const std::string& prefix, const ModelDims& d,
                             const Runtime& rt)
    : params_(params),
      dims_{rt.tp.share(d.gdn.k_heads), d.gdn.k_dim, rt.tp.share(d.gdn.v_heads), d.gdn.v_dim,
            d.gdn.conv},
      batch_(d.batch),
      seq_(d.seq),
      rows_(d.rows()),
      eps_(d.eps),
      q_scale_(1.0f / std::sqrt(static_cast<float>(d.gdn.k_dim))),
      tp_comm_(rt.tp.comm) {
  const GatedDeltaNetDims& g = dims_;
  const int64_t kw = g.k_heads * g.k_dim, vw = g.v_heads * g.v_dim, hidden = d.hidden;
  const int64_t kw_all = d.gdn.k_heads * d.gdn.k_dim, vw_all = d.gdn.v_heads * d.gdn.v_dim;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t global) {
    return params.add(prefix + name, {rows, hidden}, ParamKind::matrix,
                      rt.tp.shard(0, rows, global));
  };
  in_q_ = matrix("in_proj_q.weight", kw, kw_all);
  matrix("in_proj_k.weight", kw, kw_all);
  matrix("in_proj_v.weight", vw, vw_all);
  matrix("in_proj_z.weight", vw, vw_all);
  matrix("in_proj_b.weight", g.v_heads, d.gdn.v_heads);
  in_a_ = matrix("in_proj_a.weight", g.v_heads, d.gdn.v_heads);
  auto conv = [&](const std::string& name, int64_t rows, int64_t global) {
    return params.add(prefix + name, {rows, g.conv}, ParamKind::matrix,
                      rt.tp.shard(0, rows, global), ParamInit::fan_in_uniform);
  };
  conv_q_ = conv("conv1d_q.weight", kw, kw_all);
  conv("conv1d_k.weight", kw, kw_all);
  conv_v_ = conv("conv1d_v.weight", vw, vw_all);
  // A_log: decay rates exp(A_log) in [1, 16] at init; dt_bias 1 (Hugging Face's); both 1-D and
  // exempt from weight decay as norms are.
  a_log_ = params.add(prefix + "A_log", {g.v_heads}, ParamKind::norm,
                      rt.tp.shard(0, g.v_heads, d.gdn.v_heads), ParamInit::log_uniform_1_16);
  dt_bias_ = params.add(prefix + "dt_bias", {g.v_heads}, ParamKind::norm,
                        rt.tp.shard(0, g.v_heads, d.gdn.v_heads), ParamInit::ones);
  norm_ = params.add(prefix + "norm.weight", {g.v_dim}, ParamKind::norm);
  out_proj_ = params.add(prefix + "out_proj.weight", {hidden, vw}, ParamKind::matrix,
                         rt.tp.shard(1, vw, vw_all));

  const int64_t rows = rows_, cd = g.conv_dim(), proj = cd + vw + 2 * g.v_heads;
  const int64_t chunks = (d.seq + ops::kGatedDeltaChunk - 1) / ops::kGatedDeltaChunk;
  t_.proj = rt.empty({rows, proj});
  for (Tensor* t : {&t_.qkv_pre, &t_.conv_pre, &t_.conv, &dconv_, &dqkv_pre_})
    *t = rt.empty({d.batch, d.seq, cd});
  for (Tensor* t : {&t_.q_raw, &t_.k_raw, &t_.q, &t_.k, &dq_, &dk_, &dq_raw_, &dk_raw_})
    *t = rt.empty({d.batch, d.seq, g.k_heads, g.k_dim});
  for (Tensor* t : {&t_.v, &t_.z, &core_, &normed_, &dnormed_, &dcore_, &dz_, &dv_})
    *t = rt.empty({d.batch, d.seq, g.v_heads, g.v_dim});
  for (Tensor* t : {&t_.b, &t_.a, &t_.g, &t_.beta, &dg_, &dbeta_, &da_, &db_})
    *t = rt.empty({rows, g.v_heads});
  t_.qr = rt.empty({rows * g.k_heads}), t_.kr = rt.empty({rows * g.k_heads});
  states_ = rt.empty({d.batch, g.v_heads, chunks + 1, g.k_dim, g.v_dim});
  nrstd_ = rt.empty({rows * g.v_heads});
  dproj_ = rt.empty(t_.proj.shape());
  if (tp_comm_) dnorm_w_ = rt.empty({g.v_dim});
  max_logits_ = rt.empty({0});
}

std::vector<Shape> GatedDeltaNet::decode_state(int64_t /*max_len*/) const {
  return {{dims_.conv - 1, dims_.conv_dim()}, {dims_.v_heads, dims_.k_dim, dims_.v_dim}};
}

void GatedDeltaNet::project(const Tensor& x, Parts& p, const DecodeStep* step) {
  linear_forward(x, params_.fused_weight(in_q_, in_a_), p.proj, step);
  std::array<Tensor, 4> parts{p.qkv_pre.reshape({x.rows(), dims_.conv_dim()}),
                              p.z.reshape({x.rows(), dims_.v_heads * dims_.v_dim}), p.b, p.a};
  ops::split_cols(p.proj, parts);
}

void GatedDeltaNet::normalize(Parts& p) {
  const int64_t n = p.b.rows(), kw = dims_.k_heads * dims_.k_dim;
  std::array<Tensor, 3> parts{p.q_raw.reshape({n, kw}), p.k_raw.reshape({n, kw}),
                              p.v.reshape({n, dims_.v_heads * dims_.v_dim})};
  ops::split_cols(p.conv.reshape({n, dims_.conv_dim()}), parts);
  Tensor q = p.q.reshape({n * dims_.k_heads, dims_.k_dim});
  Tensor k = p.k.reshape({n * dims_.k_heads, dims_.k_dim});
  ops::l2norm_forward(p.q_raw.reshape({n * dims_.k_heads, dims_.k_dim}), kL2Eps, q_scale_, q, p.qr);
  ops::l2norm_forward(p.k_raw.reshape({n * dims_.k_heads, dims_.k_dim}), kL2Eps, 1.0f, k, p.kr);
  ops::gdn_gates_forward(p.a, p.b, a_log_.value(), dt_bias_.value(), p.g, p.beta);
}

void GatedDeltaNet::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  const GatedDeltaNetDims& g = dims_;
  const int64_t vw = g.v_heads * g.v_dim;
  if (!step) {
    project(x, t_, nullptr);
    ops::conv_silu_forward(t_.qkv_pre, params_.fused_value(conv_q_, conv_v_), t_.conv_pre, t_.conv);
    normalize(t_);
    const Shape heads{batch_, seq_, g.v_heads};
    ops::gated_delta_forward(t_.q, t_.k, t_.v, t_.g.reshape(heads), t_.beta.reshape(heads), core_,
                             states_);
    Tensor normed = normed_.reshape({rows_ * g.v_heads, g.v_dim});
    ops::gated_rmsnorm_forward(core_.reshape({rows_ * g.v_heads, g.v_dim}),
                               t_.z.reshape({rows_ * g.v_heads, g.v_dim}), norm_.value(), eps_,
                               normed, nrstd_);
    linear_forward(normed_.reshape({rows_, vw}), out_proj_.weight(), y);
    return;
  }
  // Decoding: the conv and the recurrence carry their state from the previous positions.
  const int64_t n = x.rows(), kw = g.k_heads * g.k_dim;
  Parts p;
  p.proj = d_proj_.rows(n, g.conv_dim() + vw + 2 * g.v_heads);
  p.qkv_pre = d_qkv_pre_.rows(n, g.conv_dim());
  p.z = d_z_.rows(n, vw);
  p.b = d_b_.rows(n, g.v_heads), p.a = d_a_.rows(n, g.v_heads);
  p.conv = d_conv_.rows(n, g.conv_dim());
  p.q_raw = d_q_raw_.rows(n, kw), p.k_raw = d_k_raw_.rows(n, kw), p.v = d_v_.rows(n, vw);
  p.q = d_q_.rows(n, kw), p.k = d_k_.rows(n, kw);
  p.qr = d_qr_.rows(n * g.k_heads, 1), p.kr = d_kr_.rows(n * g.k_heads, 1);
  p.g = d_g_.rows(n, g.v_heads), p.beta = d_beta_.rows(n, g.v_heads);
  project(x, p, step);
  Tensor conv_state = step->state[0], state = step->state[1];
  ops::conv_silu_step(p.qkv_pre, params_.fused_value(conv_q_, conv_v_), conv_state, p.conv);
  normalize(p);
  Tensor core = d_core_.rows(n, vw);
  Tensor core_heads = core.reshape({n, g.v_heads, g.v_dim});
  ops::gated_delta_step(p.q.reshape({n, g.k_heads, g.k_dim}), p.k.reshape({n, g.k_heads, g.k_dim}),
                        p.v.reshape({n, g.v_heads, g.v_dim}), p.g, p.beta, state, core_heads);
  Tensor normed = d_normed_.rows(n * g.v_heads, g.v_dim), nrstd = d_nrstd_.rows(n * g.v_heads, 1);
  ops::gated_rmsnorm_forward(core.reshape({n * g.v_heads, g.v_dim}),
                             p.z.reshape({n * g.v_heads, g.v_dim}), norm_.value(), eps_, normed,
                             nrstd);
  linear_forward(normed.reshape({n, vw}), out_proj_.weight(), y, step);
}

void GatedDeltaNet::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  const GatedDeltaNetDims& g = dims_;
  const int64_t rows = rows_, vw = g.v_heads * g.v_dim, kw = g.k_heads * g.k_dim;
  const int64_t vrows = rows * g.v_heads, krows = rows * g.k_heads;
  Tensor dwo = out_proj_.grad();
  Tensor dnormed = dnormed_.reshape({rows, vw});
  linear_backward(dy, normed_.reshape({rows, vw}), out_proj_.weight(), dwo, dnormed);
  // The norm's weight is replicated under tp: this rank's heads give a share, summed below.
  Tensor dnorm_w = tp_comm_ ? dnorm_w_ : norm_.grad();
  if (tp_comm_) ops::fill(dnorm_w_, 0.0f);
  Tensor dcore = dcore_.reshape({vrows, g.v_dim}), dz = dz_.reshape({vrows, g.v_dim});
  ops::gated_rmsnorm_backward(dnormed_.reshape({vrows, g.v_dim}), core_.reshape({vrows, g.v_dim}),
                              t_.z.reshape({vrows, g.v_dim}), norm_.value(), nrstd_, dcore, dz,
                              dnorm_w);
  const Shape heads{batch_, seq_, g.v_heads};
  Tensor dg = dg_.reshape(heads), dbeta = dbeta_.reshape(heads);
  ops::gated_delta_backward(dcore_, t_.q, t_.k, t_.v, t_.g.reshape(heads), t_.beta.reshape(heads),
                            states_, dq_, dk_, dv_, dg, dbeta);
  Tensor dlog = a_log_.grad(), ddt = dt_bias_.grad();
  ops::gdn_gates_backward(dg_, dbeta_, t_.a, a_log_.value(), dt_bias_.value(), t_.beta, da_, db_,
                          dlog, ddt);
  Tensor dq_raw = dq_raw_.reshape({krows, g.k_dim}), dk_raw = dk_raw_.reshape({krows, g.k_dim});
  ops::l2norm_backward(dq_.reshape({krows, g.k_dim}), t_.q_raw.reshape({krows, g.k_dim}), t_.qr,
                       q_scale_, dq_raw);
  ops::l2norm_backward(dk_.reshape({krows, g.k_dim}), t_.k_raw.reshape({krows, g.k_dim}), t_.kr,
                       1.0f, dk_raw);
  const std::array<Tensor, 3> conv_parts{dq_raw_.reshape({rows, kw}), dk_raw_.reshape({rows, kw}),
                                         dv_.reshape({rows, vw})};
  Tensor dconv = dconv_.reshape({rows, g.conv_dim()});
  ops::concat_cols(conv_parts, dconv);
  Tensor dwconv = params_.fused_grad(conv_q_, conv_v_);
  ops::conv_silu_backward(dconv_, t_.qkv_pre, params_.fused_value(conv_q_, conv_v_), t_.conv_pre,
                          dqkv_pre_, dwconv);
  const std::array<Tensor, 4> proj_parts{dqkv_pre_.reshape({rows, g.conv_dim()}),
                                         dz_.reshape({rows, vw}), db_, da_};
  ops::concat_cols(proj_parts, dproj_);
  Tensor dwin = params_.fused_grad(in_q_, in_a_);
  linear_backward(dproj_, x, params_.fused_weight(in_q_, in_a_), dwin, dx);
  if (!tp_comm_) return;
  tp_comm_->all_reduce(dnorm_w_);
  Tensor gn = norm_.grad();
  ops::axpy(1.0f, dnorm_w_, gn);
}

}  // namespace moetron
