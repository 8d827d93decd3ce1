// The CUDA kernels against the host launchers of the same math (core/kernels/host.h), on
// random inputs: one list of checks, asserted by tests/core/test_cuda.cc and reported by the
// GPU check driver (tests/gpu/gpu_check_main.cc, run by launch/gpu_check.sh). Needs a GPU.
#pragma once

#include <string>
#include <vector>

namespace moetron::gpu {

struct KernelCheck {
  std::string name;
  double max_relative = 0;  // largest |device - host| / (|host| + 1e-30)
  double bound = 0;         // what is allowed: 0 means bit for bit
  bool passed() const { return max_relative <= bound; }
};

// scale: 1 for the full sizes, larger for smaller runs (compute-sanitizer); gemms: the cuBLASLt
// checks too.
std::vector<KernelCheck> run_kernel_checks(int scale = 1, bool gemms = true);

}  // namespace moetron::gpu
