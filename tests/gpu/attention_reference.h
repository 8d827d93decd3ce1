// Causal grouped-query attention in double, in moetron's layout (core/ops.h attention_forward):
// the oracle of the GPU check's cuDNN attention (tests/gpu/attention_checks.cc). CI checks it
// against the CPU backend's attention (tests/core/test_cudnn_attention.cc), so on a GPU the
// device is compared with a reference that is itself checked. Inputs as floats (the check
// rounds them to bf16 first), results in double.
#pragma once

#include <vector>

#include "core/cuda/attention_graph.h"

namespace moetron::gpu {

struct AttentionResult {
  std::vector<double> out, lse, row_max;  // [B, T, H, dv], [B, H, T], [B, H, T]
};
struct AttentionGrads {
  std::vector<double> dq, dk, dv;  // shaped as q, k, v
};

AttentionResult attention_reference(const cuda::AttentionShape& s, const std::vector<float>& q,
                                    const std::vector<float>& k, const std::vector<float>& v);
AttentionGrads attention_reference_backward(const cuda::AttentionShape& s,
                                            const std::vector<float>& q,
                                            const std::vector<float>& k,
                                            const std::vector<float>& v,
                                            const std::vector<float>& dout);

}  // namespace moetron::gpu
