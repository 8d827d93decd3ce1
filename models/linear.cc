#include "models/linear.h"

#include "core/ops.h"

namespace moetron {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  ops::matmul(x, false, w, true, y);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dw, Tensor& dx,
                     bool accumulate_dx) {
  ops::matmul(dy, true, x, false, dw, 1.0f, 1.0f);
  ops::matmul(dy, false, w, false, dx, 1.0f, accumulate_dx ? 1.0f : 0.0f);
}

}  // namespace moetron
