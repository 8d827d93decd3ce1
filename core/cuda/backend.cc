// The CUDA backend: the device backend's text (core/kernels/device_backend.inc) on the CUDA
// launchers of core/cuda/kernels.h, cuBLASLt's GEMMs and CUDA's stream-ordered memory pool.
// Everything runs on the legacy default stream of device 0 (one device per process: the
// launcher gives each rank its GPU by CUDA_VISIBLE_DEVICES), so the kernels, the GEMMs, the
// pool's allocations and the copies are ordered with each other without events. A bf16 run's
// attention is cuDNN's fused attention where the build has cuDNN (core/cuda/attention_graph.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#if MOETRON_HAVE_CUDNN
#include "core/cuda/attention_graph.h"
#endif
#include "core/cuda/blas_lt.h"
#include "core/cuda/check.cuh"
#include "core/cuda/device.h"
#include "core/cuda/kernels.h"
#include "core/kernels/gated_delta_work.h"
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
#if MOETRON_HAVE_CUDNN
  // cuDNN's fused attention on bf16 copies of the operands, its bf16 results widened into the
  // ops' f32 tensors; false for a shape cuDNN refuses.
  bool fused_attention_forward(const kernels::AttentionDims& s, const float* q, const float* k,
                               const float* v, float* out, float* lse, float* row_max,
                               const std::function<void*(size_t)>& scratch);
  bool fused_attention_backward(const kernels::AttentionDims& s, const float* dout, const float* q,
                                const float* k, const float* v, const float* out, const float* lse,
                                float* dq, float* dk, float* dv,
                                const std::function<void*(size_t)>& scratch);
#else
  // No cuDNN in this build: the backend's own kernels run on rounded copies.
  bool fused_attention_forward(const kernels::AttentionDims&, const float*, const float*,
                               const float*, float*, float*, float*,
                               const std::function<void*(size_t)>&) {
    return false;
  }
  bool fused_attention_backward(const kernels::AttentionDims&, const float*, const float*,
                                const float*, const float*, const float*, const float*, float*,
                                float*, float*, const std::function<void*(size_t)>&) {
    return false;
  }
#endif

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
#if MOETRON_HAVE_CUDNN
  std::unique_ptr<AttentionGraphCache> attention_ = std::make_unique<AttentionGraphCache>();
#endif
};

#if MOETRON_HAVE_CUDNN
AttentionShape shape_of(const kernels::AttentionDims& s, bool row_max) {
  return {s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.v_dim, s.scale, row_max};
}

// The element counts of q, k, v and out (also dout).
struct AttentionSizes {
  int64_t q, k, v, out;
  explicit AttentionSizes(const kernels::AttentionDims& s)
      : q(s.batch * s.seq * s.heads * s.head_dim),
        k(s.batch * s.seq * s.kv_heads * s.head_dim),
        v(s.batch * s.seq * s.kv_heads * s.v_dim),
        out(s.batch * s.seq * s.heads * s.v_dim) {}
};

// Consecutive pieces of one scratch block: bf16 tensors of the given element counts, then the
// workspace; each 256-byte aligned (cuDNN wants 16).
class Pieces {
 public:
  Pieces(std::initializer_list<int64_t> words, size_t workspace) {
    for (int64_t n : words) add(static_cast<size_t>(n) * sizeof(uint16_t));
    add(workspace);
  }
  size_t total() const { return total_; }
  uint16_t* words(void* base, size_t i) const { return static_cast<uint16_t*>(at(base, i)); }
  void* workspace(void* base) const { return at(base, offsets_.size() - 1); }

 private:
  void add(size_t bytes) {
    offsets_.push_back(total_);
    total_ += (bytes + 255) / 256 * 256;
  }
  void* at(void* base, size_t i) const { return static_cast<char*>(base) + offsets_[i]; }

  std::vector<size_t> offsets_;
  size_t total_ = 0;
};

bool Side::fused_attention_forward(const kernels::AttentionDims& s, const float* q, const float* k,
                                   const float* v, float* out, float* lse, float* row_max,
                                   const std::function<void*(size_t)>& scratch) {
  start();
  const AttentionGraphs* g = attention_->forward(shape_of(s, row_max != nullptr));
  if (!g) return false;
  const AttentionSizes n(s);
  const Pieces p({n.q, n.k, n.v, n.out}, g->workspace_bytes());
  void* base = scratch(p.total());
  launch::to_bf16(q, p.words(base, 0), n.q);
  launch::to_bf16(k, p.words(base, 1), n.k);
  launch::to_bf16(v, p.words(base, 2), n.v);
  g->forward(p.words(base, 0), p.words(base, 1), p.words(base, 2), p.words(base, 3), lse, row_max,
             p.workspace(base));
  launch::from_bf16(p.words(base, 3), out, n.out);
  return true;
}

bool Side::fused_attention_backward(const kernels::AttentionDims& s, const float* dout,
                                    const float* q, const float* k, const float* v,
                                    const float* out, const float* lse, float* dq, float* dk,
                                    float* dv, const std::function<void*(size_t)>& scratch) {
  start();
  const AttentionGraphs* g = attention_->backward(shape_of(s, false));
  if (!g) return false;
  const AttentionSizes n(s);
  // q, k, v, out, dout in; dq, dk, dv out.
  const Pieces p({n.q, n.k, n.v, n.out, n.out, n.q, n.k, n.v}, g->workspace_bytes());
  void* base = scratch(p.total());
  launch::to_bf16(q, p.words(base, 0), n.q);
  launch::to_bf16(k, p.words(base, 1), n.k);
  launch::to_bf16(v, p.words(base, 2), n.v);
  launch::to_bf16(out, p.words(base, 3), n.out);
  launch::to_bf16(dout, p.words(base, 4), n.out);
  g->backward(p.words(base, 0), p.words(base, 1), p.words(base, 2), p.words(base, 3),
              p.words(base, 4), lse, p.words(base, 5), p.words(base, 6), p.words(base, 7),
              p.workspace(base));
  launch::from_bf16(p.words(base, 5), dq, n.q);
  launch::from_bf16(p.words(base, 6), dk, n.k);
  launch::from_bf16(p.words(base, 7), dv, n.v);
  return true;
}
#endif

#include "core/kernels/device_backend.inc"

}  // namespace
}  // namespace moetron::cuda

namespace moetron {

std::unique_ptr<Backend> make_cuda_backend() {
  return std::make_unique<cuda::DeviceBackend>(cuda::Side{});
}

}  // namespace moetron
