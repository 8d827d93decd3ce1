// CUDA device discovery and the first device kernels. Host code never includes CUDA headers:
// everything here takes plain host pointers and sizes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moetron::cuda {

// Visible CUDA devices (0 when there is no GPU or no driver).
int device_count();
// "NAME (sm_XY, N GiB)" of device `index`.
std::string device_description(int index);
// out = a + b computed on device 0 (copies in and out): the smoke test of the toolchain,
// the driver and the device together.
void add(std::span<const float> a, std::span<const float> b, std::span<float> out);

// Device memory for n floats on device 0 (RAII), for the kernel tests: filled from the host or
// left uninitialised, read back whole.
class DeviceFloats {
 public:
  explicit DeviceFloats(size_t n);
  explicit DeviceFloats(std::span<const float> host);
  ~DeviceFloats();
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* get() { return data_; }
  std::vector<float> to_host() const;  // waits for the device

 private:
  float* data_ = nullptr;
  size_t n_ = 0;
};

}  // namespace moetron::cuda
