#include "models/linear.h"

#include "core/ops.h"

namespace moetron {
namespace {

// x in `dtype`: itself, or its rounded copy (the cast runs where the GEMM reads its operand; a
// device backend would fuse it into the kernel that produced x).
Tensor in_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  ops::cast(x, out);
  return out;
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  ops::matmul(in_dtype(x, w.dtype()), false, w, true, y);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dw, Tensor& dx,
                     bool accumulate_dx) {
  const Tensor g = in_dtype(dy, w.dtype());
  ops::matmul(g, true, in_dtype(x, w.dtype()), false, dw, 1.0f, 1.0f);
  ops::matmul(g, false, w, false, dx, 1.0f, accumulate_dx ? 1.0f : 0.0f);
}

void experts_forward(const Tensor& x, std::span<const Tensor> ws, const Tensor& offsets,
                     Tensor& y) {
  const DType dtype = ws.empty() ? x.dtype() : ws.front().dtype();
  ops::grouped_matmul(in_dtype(x, dtype), ws, offsets, y);
}

void experts_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> ws,
                      const Tensor& offsets, std::span<Tensor> dws, Tensor& dx) {
  const DType dtype = ws.empty() ? x.dtype() : ws.front().dtype();
  ops::grouped_matmul_backward(in_dtype(dy, dtype), in_dtype(x, dtype), ws, offsets, dws, dx);
}

}  // namespace moetron
