// The GPU check's attention step: cuDNN's fused attention (core/cuda/attention_graph.h) on the
// device against the double reference (tests/gpu/attention_reference.h), forward and backward,
// on shapes moetron's layers use (GQA, MLA's 192/128, the row max QK-clip reads). Needs a GPU
// and cuDNN; built where the CUDA toolkit has cuDNN and the frontend's headers were fetched.
#pragma once

#include <vector>

#include "tests/gpu/kernel_checks.h"

namespace moetron::gpu {

// scale: 1 for the full sizes, larger for smaller runs (compute-sanitizer).
std::vector<KernelCheck> run_attention_checks(int scale = 1);

}  // namespace moetron::gpu
