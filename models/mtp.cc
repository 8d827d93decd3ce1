#include "models/mtp.h"

#include <array>

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

MtpModule::MtpModule(ParamTable& params, int64_t layer_index, const ModelDims& d,
                     const RopeTables& rope, const Runtime& rt)
    : params_(params),
      enorm_(params, "model.layers." + std::to_string(layer_index) + ".enorm.weight", d.hidden,
             d.eps, rt, d.zero_centered_norms),
      hnorm_(params, "model.layers." + std::to_string(layer_index) + ".hnorm.weight", d.hidden,
             d.eps, rt, d.zero_centered_norms),
      eh_proj_(params.add("model.layers." + std::to_string(layer_index) + ".eh_proj.weight",
                          {d.hidden, 2 * d.hidden}, ParamKind::matrix)),
      block_(params, "model.layers." + std::to_string(layer_index) + ".", d, rope,
             d.mixer(layer_index), d.is_moe_layer(layer_index), rt),
      head_norm_(params, "model.layers." + std::to_string(layer_index) + ".shared_head.norm.weight",
                 d.hidden, d.eps, rt, d.zero_centered_norms),
      emb_n_buf_(DType::f32, rt.device),
      h_prev_n_buf_(DType::f32, rt.device),
      cat_buf_(DType::f32, rt.device),
      x_buf_(DType::f32, rt.device),
      h_buf_(DType::f32, rt.device) {
  for (Tensor* t : {&head_in_, &dh_, &dx_, &d_emb_n_, &d_h_prev_n_, &d_out_sum_})
    *t = rt.empty({d.rows(), d.hidden});
  dcat_ = rt.empty({d.rows(), 2 * d.hidden});
}

void MtpModule::run(const Tensor& emb, const Tensor& h_prev, Tensor& h_k, const DecodeStep* step) {
  const int64_t n = emb.rows(), d = emb.cols();
  emb_n_ = emb_n_buf_.rows(n, d), h_prev_n_ = h_prev_n_buf_.rows(n, d);
  cat_ = cat_buf_.rows(n, 2 * d), x_ = x_buf_.rows(n, d), h_ = h_buf_.rows(n, d);
  enorm_.forward(emb, emb_n_);
  hnorm_.forward(h_prev, h_prev_n_);
  const std::array<Tensor, 2> parts{emb_n_, h_prev_n_};  // embedding first, as in V3's weights
  ops::concat_cols(parts, cat_);
  linear_forward(cat_, eh_proj_.weight(), x_, step);
  if (step)
    block_.forward(x_, h_, *step);
  else
    block_.forward(x_, h_);
  head_norm_.forward(h_, h_k);
}

void MtpModule::backward(const Tensor& d_head_input, const Tensor& d_output, const Tensor& emb,
                         const Tensor& h_prev, Tensor& d_emb, Tensor& d_h_prev) {
  // h_k feeds the head and module k + 1: both gradients meet before shared_head.norm.
  if (d_output.defined()) ops::add(d_head_input, d_output, d_out_sum_);
  head_norm_.backward(d_output.defined() ? d_out_sum_ : d_head_input, h_, dh_,
                      /*accumulate_dx=*/false);
  block_.backward(dh_, x_, dx_);
  Tensor dw = eh_proj_.grad();
  linear_backward(dx_, cat_, eh_proj_.weight(), dw, dcat_);
  std::array<Tensor, 2> parts{d_emb_n_, d_h_prev_n_};
  ops::split_cols(dcat_, parts);
  enorm_.backward(d_emb_n_, emb, d_emb, /*accumulate_dx=*/false);
  hnorm_.backward(d_h_prev_n_, h_prev, d_h_prev, /*accumulate_dx=*/true);
}

}  // namespace moetron
