#include "trainer/optimizer.h"

#include <cmath>

#include "core/ops.h"

namespace moetron {

AdamW::AdamW(ParamTable& params, const config::OptimizerConfig& cfg)
    : params_(params),
      cfg_(cfg),
      m_(Tensor::zeros({params.numel()})),
      v_(Tensor::zeros({params.numel()})) {}

double AdamW::grad_norm() const {
  return std::sqrt(ops::sum_squares(params_.flat_grads()));
}

void AdamW::step(double lr, double grad_norm) {
  if (cfg_.grad_clip() > 0.0f) {
    // torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
    const double coef = cfg_.grad_clip() / (grad_norm + 1e-6);
    if (coef < 1.0) ops::scale(params_.flat_grads(), static_cast<float>(coef));
  }
  ++step_;
  for (const ParamInfo& p : params_.infos()) {
    if (p.kind == ParamKind::buffer) continue;  // state, not trained
    const bool decays = p.kind == ParamKind::matrix || cfg_.decay_norms_and_embeddings();
    const ops::AdamWStep s{static_cast<float>(lr),
                           cfg_.beta1(),
                           cfg_.beta2(),
                           cfg_.eps(),
                           decays ? cfg_.weight_decay() : 0.0f,
                           step_};
    const int64_t n = shape_numel(p.shape);
    Tensor value = params_.flat_values().view(p.offset, {n});
    Tensor m = m_.view(p.offset, {n}), v = v_.view(p.offset, {n});
    ops::adamw(value, params_.flat_grads().view(p.offset, {n}), m, v, s);
  }
}

}  // namespace moetron
