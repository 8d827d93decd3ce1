// The CUDA backend: the device backend's text (core/kernels/device_backend.inc) on the CUDA
// launchers of core/cuda/kernels.h, cuBLASLt's GEMMs and CUDA's stream-ordered memory pool.
// Everything runs on the legacy default stream of device 0 (one device per process: the
// launcher gives each rank its GPU by CUDA_VISIBLE_DEVICES), so the kernels, the GEMMs, the
// pool's allocations and the copies are ordered with each other without events.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/cuda/blas_lt.h"
#include "core/cuda/check.cuh"
#include "core/cuda/device.h"
#include "core/cuda/kernels.h"
#include "core/kernels/gemm_plan.h"
#include "core/memory_counter.h"
#include "core/ops.h"
#include "core/ops_decode.h"
#include "core/ops_linear_attention.h"

namespace moetron::cuda {
namespace {

namespace launch = ::moetron::cuda;

// CUDA is touched only when the backend is first used (registering it on a machine with a GPU
// creates no context, so CPU-only runs there cost nothing).
class Side {
 public:
  Device device() const { return {DeviceKind::cuda, 0}; }
  std::string name() const { return "cuda:0 " + device_description(0) + " (cuBLASLt)"; }
  void* allocate(size_t bytes) {
    start();
    void* p = nullptr;
    const cudaError_t err = cudaMallocAsync(&p, std::max<size_t>(bytes, 1), nullptr);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw Error(
          detail::concat("cuda:0: cannot allocate ", bytes, " bytes: ", cudaGetErrorString(err)));
    }
    return p;
  }
  void release(void* p) noexcept {
    if (p) cudaFreeAsync(p, nullptr);
  }
  void copy(void* dst, const void* src, size_t bytes) {
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
  }
  void zero(void* p, size_t bytes) { check(cudaMemsetAsync(p, 0, bytes, nullptr), "cudaMemset"); }
  void synchronize() { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }
  void gemm(const kernels::GemmPlan& p, bool bf16, const void* first, const void* second,
            float* c) {
    start();
    blas_->gemm(p, bf16 ? GemmOperands::bf16 : GemmOperands::f32, first, second, c);
  }

 private:
  void start() {
    std::call_once(*started_, [this] {
      // Freed blocks stay in the pool rather than going back to the driver at each
      // synchronisation: the pool is then a caching allocator, as PyTorch's is.
      cudaMemPool_t pool = nullptr;
      check(cudaDeviceGetDefaultMemPool(&pool, 0), "cudaDeviceGetDefaultMemPool");
      uint64_t keep = UINT64_MAX;
      check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
            "cudaMemPoolSetAttribute");
      blas_ = std::make_unique<BlasLt>();
    });
  }

  std::unique_ptr<std::once_flag> started_ = std::make_unique<std::once_flag>();
  std::unique_ptr<BlasLt> blas_;
};

#include "core/kernels/device_backend.inc"

}  // namespace
}  // namespace moetron::cuda

namespace moetron {

std::unique_ptr<Backend> make_cuda_backend() {
  return std::make_unique<cuda::DeviceBackend>(cuda::Side{});
}

}  // namespace moetron
