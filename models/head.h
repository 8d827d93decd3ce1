// The output head fused with cross-entropy: logits never exist beyond one chunk of rows.
// The weight is lm_head.weight, or the embedding table when tied.
#pragma once

#include <span>

#include "models/params.h"

namespace moetron {

class OutputHead {
 public:
  OutputHead(ParamRef weight, int64_t rows, int64_t vocab);
  // Mean CE over the rows of h [rows, hidden]. With dh non-null, dh = grad_weight * dmean/dh
  // and the weight's gradient accumulates grad_weight * dmean/dW.
  double loss(const Tensor& h, std::span<const int32_t> targets, float grad_weight, Tensor* dh);

 private:
  ParamRef weight_;
  Tensor workspace_;
};

}  // namespace moetron
