// The CUDA error check of core/cuda/*.cu: an Error naming the call and CUDA's reason.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "core/check.h"

namespace moetron::cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace moetron::cuda
