#include "models/rmsnorm.h"

#include "core/ops.h"

namespace moetron {

RMSNorm::RMSNorm(ParamTable& params, const std::string& name, int64_t dim, float eps,
                 const Runtime& rt)
    : weight_(params.add(name, {dim}, ParamKind::norm)),
      eps_(eps),
      rstd_buf_(DType::f32, rt.device) {}

void RMSNorm::forward(const Tensor& x, Tensor& y) {
  rstd_ = rstd_buf_.rows(x.rows(), 1);
  ops::rmsnorm_forward(x, weight_.value(), eps_, y, rstd_);
}

void RMSNorm::backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate_dx,
                       Tensor* dweight) {
  Tensor dw = dweight ? *dweight : weight_.grad();
  ops::rmsnorm_backward(dy, x, weight_.value(), rstd_, dx, dw, accumulate_dx);
}

}  // namespace moetron
