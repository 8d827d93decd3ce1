// The FFN slot of a block: the dense SwiGLU now, the mixture of experts beside it.
#pragma once

#include "core/tensor.h"

namespace moetron {

class FeedForward {
 public:
  virtual ~FeedForward() = default;
  // x, y: [rows, hidden]. forward saves what backward needs.
  virtual void forward(const Tensor& x, Tensor& y) = 0;
  // dx is overwritten; parameter gradients accumulate.
  virtual void backward(const Tensor& dy, const Tensor& x, Tensor& dx) = 0;
};

}  // namespace moetron
