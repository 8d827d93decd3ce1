// CUDA device discovery and the first device kernels. Host code never includes CUDA headers:
// everything here takes plain host pointers and sizes.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace moetron::cuda {

// Visible CUDA devices (0 when there is no GPU or no driver).
int device_count();
// "NAME (sm_XY, N GiB)" of device `index`.
std::string device_description(int index);
// out = a + b computed on device 0 (copies in and out): the smoke test of the toolchain,
// the driver and the device together.
void add(std::span<const float> a, std::span<const float> b, std::span<float> out);

}  // namespace moetron::cuda
