#include "models/head.h"

#include "core/ops.h"

namespace moetron {

OutputHead::OutputHead(ParamRef weight, int64_t rows, int64_t vocab)
    : weight_(weight), workspace_(Tensor::empty({ops::ce_workspace_size(rows, vocab)})) {}

double OutputHead::loss(const Tensor& h, std::span<const int32_t> targets, float grad_weight,
                        Tensor* dh) {
  const auto rows = static_cast<float>(h.rows());
  Tensor dw = weight_.grad();
  const double sum = ops::head_cross_entropy(h, weight_.value(), targets, grad_weight / rows, dh,
                                             dh ? &dw : nullptr, workspace_);
  return sum / rows;
}

}  // namespace moetron
