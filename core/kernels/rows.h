// Per-element and per-row math of the MoE dispatch's row kernels (core/ops.h gather_rows,
// combine_rows, combine_rows_backward), the token embedding and the bf16 casts, host
// and device alike. Index paths are exact on both; the combine's multiply-adds are explicit
// fmaf, as the CPU backend's vectorised a += w * s contracts to on an FMA machine.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/bf16.h"
#include "core/kernels/hd.h"
#include "core/kernels/warp.h"

namespace moetron::kernels {

// dst [rows, dim] row r = src row row_token[r]: element i.
MT_HD void gather_rows_at(const float* src, const int32_t* row_token, int64_t dim, float* dst,
                          int64_t i) {
  const int64_t r = i / dim, c = i % dim;
  dst[i] = src[static_cast<int64_t>(row_token[r]) * dim + c];
}

// dst [tokens, dim] element i = (accumulate ? dst : 0) + sum over the token's k slots with a
// row (slot_row >= 0) of weight * src[row], slots in order; weights may be null (all 1).
MT_HD void combine_rows_at(const float* src, const int32_t* slot_row, const float* weights,
                           int64_t k, int64_t dim, float* dst, bool accumulate, int64_t i) {
  const int64_t t = i / dim, c = i % dim;
  float d = accumulate ? dst[i] : 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    const int32_t row = slot_row[t * k + j];
    if (row < 0) continue;
    const float w = weights != nullptr ? weights[t * k + j] : 1.0f;
    d = fmaf(w, src[static_cast<int64_t>(row) * dim + c], d);
  }
  dst[i] = d;
}

// combine_rows_backward, one warp per slot (t, j) = slot: lane `lane` writes its columns of
// dsrc[row] = weight * dy[t] and returns its partial dy[t] . src[row]; the butterfly's sum is
// the slot's dweight (0 for a slot without a row, where the lanes return 0 and write nothing).
MT_HD float combine_backward_lane(const float* dy, const float* src, const int32_t* slot_row,
                                  const float* weights, int64_t k, int64_t dim, float* dsrc,
                                  int64_t slot, int lane) {
  const int32_t row = slot_row[slot];
  if (row < 0) return 0.0f;
  const float w = weights[slot];
  const float* g = dy + (slot / k) * dim;
  const float* s = src + static_cast<int64_t>(row) * dim;
  float* ds = dsrc + static_cast<int64_t>(row) * dim;
  float dot = 0.0f;
  for (int64_t c = lane; c < dim; c += kWarp) {
    ds[c] = w * g[c];
    dot = fmaf(g[c], s[c], dot);
  }
  return dot;
}

// Ids outside [0, vocab), counted without atomics: block b of kIdBlock ids per thread, then one
// thread over the blocks (count_outside). The count lands in a device scalar that the step reads
// with its losses, so checking ids costs no copy back.
constexpr int64_t kIdBlock = 1024;
MT_HD int64_t id_blocks(int64_t n) {
  return (n + kIdBlock - 1) / kIdBlock;
}
MT_HD int64_t outside_in_block(const int32_t* ids, int64_t n, int64_t vocab, int64_t b) {
  const int64_t end = b * kIdBlock + kIdBlock < n ? b * kIdBlock + kIdBlock : n;
  int64_t count = 0;
  for (int64_t i = b * kIdBlock; i < end; ++i) count += ids[i] < 0 || ids[i] >= vocab ? 1 : 0;
  return count;
}

// The embedding's rows for this rank's block [first, first + rows) of the vocabulary: element i
// of out [n, dim] is its token's row, 0 for a token of another block or outside the vocabulary.
MT_HD void embedding_forward_at(const int32_t* ids, const float* table, int64_t first, int64_t rows,
                                int64_t dim, float* out, int64_t i) {
  const int64_t row = ids[i / dim] - first, c = i % dim;
  out[i] = row >= 0 && row < rows ? table[row * dim + c] : 0.0f;
}

// The embedding's gradient, deterministic without atomics: the tokens sorted by their row of
// this block, stably (a token of another block is keyed `rows`, after every row), then element i
// = (p, c) of [n, dim] with p the first position of a row adds that row's dout rows to dtable in
// token order, as the CPU backend does; every other element does nothing.
MT_HD int32_t embedding_row_key(const int32_t* ids, int64_t first, int64_t rows, int64_t i) {
  const int64_t row = ids[i] - first;
  return static_cast<int32_t>(row >= 0 && row < rows ? row : rows);
}
MT_HD void embedding_backward_at(const int32_t* sorted_rows, const int32_t* order, int64_t n,
                                 const float* dout, int64_t rows, int64_t dim, float* dtable,
                                 int64_t i) {
  const int64_t p = i / dim, c = i % dim;
  const int32_t r = sorted_rows[p];
  if (r >= rows || (p > 0 && sorted_rows[p - 1] == r)) return;
  float s = dtable[r * dim + c];
  for (int64_t q = p; q < n && sorted_rows[q] == r; ++q)
    s += dout[static_cast<int64_t>(order[q]) * dim + c];
  dtable[r * dim + c] = s;
}

MT_HD void to_bf16_at(const float* src, uint16_t* dst, int64_t i) {
  dst[i] = to_bf16(src[i]);
}
MT_HD void from_bf16_at(const uint16_t* src, float* dst, int64_t i) {
  dst[i] = from_bf16(src[i]);
}
// src rounded to bf16, held in fp32 (in place allowed): a bf16 operand in an fp32 kernel.
MT_HD void round_bf16_at(const float* src, float* dst, int64_t i) {
  dst[i] = from_bf16(to_bf16(src[i]));
}

}  // namespace moetron::kernels
