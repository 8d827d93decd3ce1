#include <cuda_runtime.h>

#include <algorithm>
#include <memory>

#include "core/cuda/check.cuh"
#include "core/cuda/device.h"

namespace moetron::cuda {
namespace {

struct DeviceFree {
  void operator()(float* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<float, DeviceFree>;

DeviceBuffer device_alloc(size_t n) {
  float* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
  return DeviceBuffer(p);
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_description(int index) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 30) + " GiB)";
}

void add(std::span<const float> a, std::span<const float> b, std::span<float> out) {
  MOETRON_CHECK(a.size() == b.size() && a.size() == out.size(), "cuda::add sizes");
  const size_t n = a.size(), bytes = n * sizeof(float);
  DeviceBuffer da = device_alloc(n), db = device_alloc(n), dout = device_alloc(n);
  check(cudaMemcpy(da.get(), a.data(), bytes, cudaMemcpyHostToDevice), "copy a");
  check(cudaMemcpy(db.get(), b.data(), bytes, cudaMemcpyHostToDevice), "copy b");
  const int threads = 256;
  add_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads>>>(
      da.get(), db.get(), dout.get(), static_cast<int64_t>(n));
  check(cudaGetLastError(), "add_kernel launch");
  check(cudaMemcpy(out.data(), dout.get(), bytes, cudaMemcpyDeviceToHost), "copy out");
}

template <typename T>
DeviceArray<T>::DeviceArray(size_t n) : n_(n) {
  check(cudaMalloc(&data_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
}

template <typename T>
DeviceArray<T>::DeviceArray(std::span<const T> host) : DeviceArray(host.size()) {
  check(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        "copy to device");
}

template <typename T>
DeviceArray<T>::~DeviceArray() {
  cudaFree(data_);
}

template <typename T>
std::vector<T> DeviceArray<T>::to_host() const {
  std::vector<T> out(n_);
  check(cudaDeviceSynchronize(), "synchronize");
  check(cudaMemcpy(out.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "copy back");
  return out;
}

template class DeviceArray<float>;
template class DeviceArray<int32_t>;
template class DeviceArray<uint16_t>;  // bf16 words
template class DeviceArray<uint8_t>;   // workspaces
template class DeviceArray<double>;
template class DeviceArray<int64_t>;

}  // namespace moetron::cuda
