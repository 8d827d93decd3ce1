// The GPU check's NCCL step (core/cuda/nccl.h): one GPU is one rank, so a communicator of one,
// each collective and its uneven (grouped) form over device memory, where the result must be the
// input unchanged, bit for bit. That exercises NCCL's set-up, the calls and the part placement
// on a device; more ranks need more GPUs.
#pragma once

#include <vector>

#include "tests/gpu/kernel_checks.h"

namespace moetron::gpu {

std::vector<KernelCheck> run_nccl_checks();

}  // namespace moetron::gpu
