// The device gated delta rule's dims from its tensors and the scratch its phases take
// (core/kernels/gated_delta.h), stated once for the device backend, which allocates that scratch,
// and the meta backend, which plans it.
#pragma once

#include <cstddef>

#include "core/kernels/gated_delta.h"
#include "core/ops_linear_attention.h"
#include "core/tensor.h"

namespace moetron::kernels {

// q [batch, seq, k_heads, dk] and v [batch, seq, v_heads, dv], or in decoding one sequence's
// q [seq, k_heads, dk] and v [seq, v_heads, dv].
inline GatedDeltaDims gated_delta_dims(const Tensor& q, const Tensor& v) {
  if (q.ndim() == 3)
    return {1, q.dim(0), q.dim(1), v.dim(1), q.dim(2), v.dim(2), ops::kGatedDeltaChunk};
  return {q.dim(0), q.dim(1), q.dim(2), v.dim(2), q.dim(3), v.dim(3), ops::kGatedDeltaChunk};
}
inline size_t gated_delta_work_bytes(const GatedDeltaDims& s, bool backward) {
  return static_cast<size_t>(gd_work_floats(s, backward)) * sizeof(float);
}

}  // namespace moetron::kernels
