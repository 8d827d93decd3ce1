// A grow-only buffer that hands out [rows, cols] views: row counts that change from step to
// step (routed tokens) allocate only when a step needs more than any step before.
#pragma once

#include <algorithm>

#include "core/tensor.h"

namespace moetron {

class RowBuffer {
 public:
  Tensor rows(int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    if (!storage_.defined() || storage_.numel() < n)
      storage_ = Tensor::empty({std::max<int64_t>(n + n / 4, 1)});  // headroom for the next
    return storage_.view(0, {rows, cols});
  }

 private:
  Tensor storage_;
};

}  // namespace moetron
