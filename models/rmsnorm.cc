#include "models/rmsnorm.h"

#include "core/ops.h"

namespace moetron {

RMSNorm::RMSNorm(ParamTable& params, const std::string& name, int64_t dim, float eps,
                 const Runtime& rt, bool zero_centered)
    : weight_(params.add(name, {dim}, ParamKind::norm, {},
                         zero_centered ? ParamInit::zeros : ParamInit::by_kind)),
      eps_(eps),
      zero_centered_(zero_centered),
      rstd_buf_(DType::f32, rt.device) {
  if (zero_centered_) one_plus_ = rt.empty({dim});
}

Tensor RMSNorm::scale() {
  if (!zero_centered_) return weight_.value();
  ops::fill(one_plus_, 1.0f);
  ops::axpy(1.0f, weight_.value(), one_plus_);
  return one_plus_;
}

void RMSNorm::forward(const Tensor& x, Tensor& y) {
  rstd_ = rstd_buf_.rows(x.rows(), 1);
  ops::rmsnorm_forward(x, scale(), eps_, y, rstd_);
}

void RMSNorm::backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate_dx,
                       Tensor* dweight) {
  Tensor dw = dweight ? *dweight : weight_.grad();
  // one_plus_ still holds the forward's 1 + w: the weights have not changed since.
  ops::rmsnorm_backward(dy, x, zero_centered_ ? one_plus_ : weight_.value(), rstd_, dx, dw,
                        accumulate_dx);
}

}  // namespace moetron
