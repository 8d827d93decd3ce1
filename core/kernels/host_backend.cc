// The device backend's text (core/kernels/device_backend.inc) on the host launchers: the CUDA
// backend's wiring with the shared kernels' host loops and host memory, as device cpu:1. The op
// harness runs every case on it (tests/core/test_ops.cc), so the CUDA backend's code is tested in
// CI apart from the CUDA launches themselves, which the GPU check holds to these launchers.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/bf16.h"
#include "core/kernels/gated_delta_work.h"
#include "core/kernels/gemm_plan.h"
#include "core/kernels/host.h"
#include "core/memory_counter.h"
#include "core/ops.h"
#include "core/ops_decode.h"
#include "core/ops_linear_attention.h"

namespace moetron::kernels::host {
namespace {

namespace launch = ::moetron::kernels::host;

// A column-major operand's elements: [rows, cols] (ld >= rows) or, transposed, [cols, rows].
size_t operand_size(int64_t ld, int64_t rows, int64_t cols, bool trans) {
  return static_cast<size_t>(ld * (trans ? rows : cols));
}
std::vector<float> widen(const void* words, size_t n) {
  std::vector<float> out(n);
  const auto* w = static_cast<const uint16_t*>(words);
  for (size_t i = 0; i < n; ++i) out[i] = ::moetron::from_bf16(w[i]);
  return out;
}

class Side {
 public:
  Device device() const { return {DeviceKind::cpu, 1}; }
  std::string name() const { return "cpu:1 (the CUDA backend's code on the host launchers)"; }
  void* allocate(size_t bytes) {
    constexpr size_t kAlignment = 64;
    const size_t rounded = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (!p) throw Error(detail::concat("cpu:1: out of memory allocating ", bytes, " bytes"));
    // A device's pool hands back what an earlier buffer left, never zeros: all bits set (NaN as
    // a float or a double, -1 as an integer), so a read of memory no op has written fails here.
    std::memset(p, 0xFF, rounded);
    return p;
  }
  void release(void* p) noexcept { std::free(p); }
  void copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
  void synchronize() {}
  void gemm(const GemmPlan& p, bool bf16, const void* first, const void* second, float* c) {
    if (!bf16) {
      host_gemm(p, static_cast<const float*>(first), static_cast<const float*>(second), c);
      return;
    }
    const std::vector<float> f = widen(first, operand_size(p.ld_first, p.m, p.k, p.trans_first));
    const std::vector<float> s = widen(second, operand_size(p.ld_second, p.k, p.n, p.trans_second));
    host_gemm(p, f.data(), s.data(), c);
  }
  // No fused attention on the host: the backend's own kernels run on rounded copies.
  bool fused_attention_forward(const AttentionDims&, const float*, const float*, const float*,
                               float*, float*, float*, const std::function<void*(size_t)>&) {
    return false;
  }
  bool fused_attention_backward(const AttentionDims&, const float*, const float*, const float*,
                                const float*, const float*, const float*, float*, float*, float*,
                                const std::function<void*(size_t)>&) {
    return false;
  }
};

#include "core/kernels/device_backend.inc"

}  // namespace
}  // namespace moetron::kernels::host

namespace moetron {

std::unique_ptr<Backend> make_host_kernels_backend() {
  return std::make_unique<kernels::host::DeviceBackend>(kernels::host::Side{});
}

}  // namespace moetron
