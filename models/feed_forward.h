// The FFN slot of a block: the dense SwiGLU or the mixture of experts.
#pragma once

#include "core/tensor.h"
#include "models/decode_step.h"

namespace moetron {

class FeedForward {
 public:
  virtual ~FeedForward() = default;
  // Training: x, y [rows, hidden]; forward saves what backward needs.
  void forward(const Tensor& x, Tensor& y) { run(x, y, nullptr); }
  // Decoding (models/decode_step.h): x, y [n, hidden], positions of one sequence, one rank.
  void forward(const Tensor& x, Tensor& y, const DecodeStep& step) { run(x, y, &step); }
  // dx is overwritten; parameter gradients accumulate.
  virtual void backward(const Tensor& dy, const Tensor& x, Tensor& dx) = 0;

 protected:
  virtual void run(const Tensor& x, Tensor& y, const DecodeStep* step) = 0;
};

}  // namespace moetron
