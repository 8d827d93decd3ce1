// Per-element math of the elementwise and copy ops (core/ops.h fill, add, axpy, scale, copy,
// concat_cols / split_cols as strided block copies, concat_heads, split_heads, transpose01),
// the QK-clip head maximum and the balancing bias update, host and device alike. Index paths
// are exact; axpy's multiply-add is an explicit fmaf, as the CPU's vectorised y += a * x
// contracts to; split_heads' broadcast part sums the heads in order, as the CPU does.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

MT_HD void fill_at(float* x, float value, int64_t i) {
  x[i] = value;
}
MT_HD void add_at(const float* a, const float* b, float* out, int64_t i) {
  out[i] = a[i] + b[i];
}
MT_HD void axpy_at(float alpha, const float* x, float* y, int64_t i) {
  y[i] = fmaf(alpha, x[i], y[i]);
}
MT_HD void scale_at(float* x, float s, int64_t i) {
  x[i] *= s;
}

// dst [rows, cols] with leading dimension ld_dst = src likewise: element i of the block.
MT_HD void copy_block_at(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t cols,
                         int64_t i) {
  const int64_t r = i / cols, c = i % cols;
  dst[r * ld_dst + c] = src[r * ld_src + c];
}

// dst [n, heads, da + db] = [a [n, heads, da] | b [n, heads or 1, db]]: element i of dst.
MT_HD void concat_heads_at(const float* a, const float* b, float* dst, int64_t heads, int64_t da,
                           int64_t db, bool broadcast, int64_t i) {
  const int64_t dw = da + db, c = i % dw, row = i / dw, token = row / heads;
  dst[i] = c < da ? a[row * da + c] : b[(broadcast ? token : row) * db + c - da];
}

// The inverse, element i of src [n, heads, da + db]; a broadcast b is summed by split_heads_sum_at
// (this writes only a then).
MT_HD void split_heads_at(const float* src, float* a, float* b, int64_t heads, int64_t da,
                          int64_t db, bool broadcast, int64_t i) {
  (void)heads;
  const int64_t dw = da + db, c = i % dw, row = i / dw;
  if (c < da)
    a[row * da + c] = src[i];
  else if (!broadcast)
    b[row * db + c - da] = src[i];
}
// b [n, db] element i = the sum over the heads, in order, of src's b parts.
MT_HD void split_heads_sum_at(const float* src, float* b, int64_t heads, int64_t da, int64_t db,
                              int64_t i) {
  const int64_t token = i / db, c = i % db, dw = da + db;
  float s = 0.0f;
  for (int64_t h = 0; h < heads; ++h) s += src[(token * heads + h) * dw + da + c];
  b[i] = s;
}

// dst [d1, d0, d2] = src [d0, d1, d2] with its first two dims swapped: element i of src.
MT_HD void transpose01_at(const float* src, int64_t d0, int64_t d1, int64_t d2, float* dst,
                          int64_t i) {
  const int64_t c = i % d2, j = (i / d2) % d1, r = i / (d1 * d2);
  dst[(j * d0 + r) * d2 + c] = src[i];
}

// acc[h] = max(acc[h], the largest row_max [batch, heads, seq] of head h).
MT_HD void head_max_at(const float* row_max, int64_t batch, int64_t heads, int64_t seq, float* acc,
                       int64_t h) {
  float m = acc[h];
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      const float v = row_max[(b * heads + h) * seq + t];
      m = v > m ? v : m;
    }
  acc[h] = m;
}

// Aux-loss-free balancing: bias[e] += speed * sign(mean(counts) - counts[e]), the mean in
// double over the experts in order (each expert's thread sums them alike).
MT_HD void bias_update_at(float* bias, const int64_t* counts, int64_t experts, float speed,
                          int64_t e) {
  double mean = 0;
  for (int64_t j = 0; j < experts; ++j) mean += static_cast<double>(counts[j]);
  mean /= static_cast<double>(experts);
  const double diff = mean - static_cast<double>(counts[e]);
  bias[e] += speed * static_cast<float>((diff > 0) - (diff < 0));
}

}  // namespace moetron::kernels
