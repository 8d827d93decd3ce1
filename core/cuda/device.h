// CUDA device discovery, a smoke-test kernel and device memory for the kernel checks (the
// kernels themselves: core/cuda/kernels.h). Host code never includes CUDA headers: everything
// here takes plain host pointers and sizes.
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

// Device memory for n values on device 0 (RAII), for the kernel checks: filled from the host
// or left uninitialised, read back whole. T: float, double, int32_t, int64_t,
// uint16_t (bf16 words) or uint8_t.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n);
  explicit DeviceArray(std::span<const T> host);
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return data_; }
  std::vector<T> to_host() const;  // waits for the device

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};
using DeviceFloats = DeviceArray<float>;

}  // namespace moetron::cuda
