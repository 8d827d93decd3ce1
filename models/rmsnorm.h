// RMSNorm layer: one weight vector; saves the per-row rstd for backward.
#pragma once

#include <string>

#include "models/params.h"

namespace moetron {

class RMSNorm {
 public:
  RMSNorm(ParamTable& params, const std::string& name, int64_t dim, float eps, int64_t rows);
  void forward(const Tensor& x, Tensor& y);
  // dx = d/dx (or dx += when accumulate_dx); the weight gradient accumulates.
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate_dx);

 private:
  ParamRef weight_;
  float eps_;
  Tensor rstd_;
};

}  // namespace moetron
