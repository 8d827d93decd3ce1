// A bias-free linear layer y = x W^T with W stored [out, in] (Hugging Face layout), and the
// experts' grouped form. The weight's dtype is the GEMM's precision (docs/precision.md): with a
// bf16 weight (ParamRef::weight() in bf16 precision) the f32 activations are rounded to bf16 at
// the GEMM and the products accumulate in fp32 into f32 outputs and gradients.
#pragma once

#include <span>

#include "core/tensor.h"

namespace moetron {

// Free functions over a weight and its gradient, so fused weights (q|k|v, gate|up) use the
// same code as single ones.
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y);
// dw += dy^T x; dx = dy W (or dx += when accumulate_dx).
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dw, Tensor& dx,
                     bool accumulate_dx = false);

// ops::grouped_matmul and its backward by the same rule: rows [offsets[e], offsets[e + 1]) of x
// times ws[e]^T.
void experts_forward(const Tensor& x, std::span<const Tensor> ws, const Tensor& offsets, Tensor& y);
void experts_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> ws,
                      const Tensor& offsets, std::span<Tensor> dws, Tensor& dx);

}  // namespace moetron
