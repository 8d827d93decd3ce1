// RMSNorm layer: one weight vector; saves the per-row rstd for backward. Any number of rows.
// Zero-centred (Qwen3-Next's): the parameter is the weight's offset from 1, y = norm(x) * (1 +
// w), initialised to 0; the gradient with respect to w is the one with respect to the weight.
#pragma once

#include <string>

#include "models/params.h"
#include "models/row_buffer.h"
#include "models/runtime.h"

namespace moetron {

class RMSNorm {
 public:
  RMSNorm(ParamTable& params, const std::string& name, int64_t dim, float eps, const Runtime& rt,
          bool zero_centered = false);
  void forward(const Tensor& x, Tensor& y);
  // dx = d/dx (or dx += when accumulate_dx); the weight gradient accumulates, into `dweight`
  // when given (a partial sum the caller reduces), else into the parameter's gradient. x is the
  // last forward's input.
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate_dx,
                Tensor* dweight = nullptr);
  const ParamRef& weight() const { return weight_; }

 private:
  // The weight the norm multiplies by: the parameter, or 1 + it (refreshed by each forward).
  Tensor scale();

  ParamRef weight_;
  float eps_;
  bool zero_centered_;
  Tensor one_plus_;  // zero-centred: 1 + w
  RowBuffer rstd_buf_;
  Tensor rstd_;  // [rows, 1] of the last forward
};

}  // namespace moetron
