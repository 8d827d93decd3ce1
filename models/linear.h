// A bias-free linear layer y = x W^T with W stored [out, in] (Hugging Face layout).
#pragma once

#include "core/tensor.h"

namespace moetron {

// Free functions over a weight and its gradient, so fused weights (q|k|v, gate|up) use the
// same code as single ones.
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y);
// dw += dy^T x; dx = dy W (or dx += when accumulate_dx).
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dw, Tensor& dx,
                     bool accumulate_dx = false);

}  // namespace moetron
