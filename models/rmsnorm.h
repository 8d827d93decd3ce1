// RMSNorm layer: one weight vector; saves the per-row rstd for backward. Any number of rows.
#pragma once

#include <string>

#include "models/params.h"
#include "models/row_buffer.h"
#include "models/runtime.h"

namespace moetron {

class RMSNorm {
 public:
  RMSNorm(ParamTable& params, const std::string& name, int64_t dim, float eps, const Runtime& rt);
  void forward(const Tensor& x, Tensor& y);
  // dx = d/dx (or dx += when accumulate_dx); the weight gradient accumulates, into `dweight`
  // when given (a partial sum the caller reduces), else into the parameter's gradient. x is the
  // last forward's input.
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate_dx,
                Tensor* dweight = nullptr);
  const ParamRef& weight() const { return weight_; }

 private:
  ParamRef weight_;
  float eps_;
  RowBuffer rstd_buf_;
  Tensor rstd_;  // [rows, 1] of the last forward
};

}  // namespace moetron
