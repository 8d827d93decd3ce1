// A grow-only buffer that hands out [rows, cols] views: row counts that change from call to
// call (routed tokens, decoding chunks) allocate only when a call needs more than any before.
#pragma once

#include <algorithm>

#include "core/tensor.h"

namespace moetron {

class RowBuffer {
 public:
  explicit RowBuffer(DType dtype = DType::f32, Device device = {})
      : dtype_(dtype), device_(device) {}

  Tensor rows(int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    if (!storage_.defined() || storage_.numel() < n)  // exact at first, then headroom to grow
      storage_ = Tensor::empty({std::max<int64_t>(n + (storage_.defined() ? n / 4 : 0), 1)}, dtype_,
                               device_);
    return storage_.view(0, {rows, cols});
  }

 private:
  DType dtype_;
  Device device_;
  Tensor storage_;
};

}  // namespace moetron
