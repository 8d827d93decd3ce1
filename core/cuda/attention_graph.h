// The CUDA backend's causal attention: cuDNN's fused SDPA graphs, forward and backward, over
// moetron's layout (core/ops.h attention_forward): q [B, T, H, hd], k [B, T, KV, hd], v [B, T,
// KV, dv], out [B, T, H, dv], lse and row_max [B, H, T]. q, k, v, out and their gradients are
// bf16 (cuDNN's fused attention takes no fp32); the softmax, its statistics (lse, row_max) and
// the accumulation are fp32, as in the dtype plan of docs/precision.md.
//
// attention_graph_problem needs no GPU: once a graph's target SM version is set, the cuDNN
// frontend checks it against that architecture's rules (head dims, GQA ratios, layouts), so CI
// checks on the CPU every shape moetron's configs ask for. AttentionGraphs builds the graphs
// into execution plans on the current device and runs them: that needs a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moetron::cuda {

struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0, value_dim = 0;
  float scale = 1.0f;    // scores = scale * q.k
  bool row_max = false;  // forward also writes each query's largest scaled score (QK-clip)
  bool operator==(const AttentionShape&) const = default;
};

// The cuDNN library loaded (cudnnGetVersion: 91900 for 9.19.0), for logs: a wheel's cuDNN can
// differ from the headers the build saw.
size_t cudnn_version();

// "heads 8, kv_heads 2, head_dim 192, value_dim 128, seq 64, batch 2": for errors.
std::string describe(const AttentionShape& s);

// Why cuDNN's fused attention cannot run `s` on compute capability `sm` (90 for H100/H200),
// forward or backward, in cuDNN's words ("backward: ... hidden_dim should be multiple of 8"), or
// "" when both graphs validate. Needs no GPU.
std::string attention_graph_problem(const AttentionShape& s, int sm);

// A cuDNN handle on the current device (RAII), bound to the default stream.
class CudnnHandle {
 public:
  CudnnHandle();
  ~CudnnHandle();
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  void* get() const { return handle_; }  // a cudnnHandle_t

 private:
  void* handle_ = nullptr;
};

// The forward and backward graphs of one shape as execution plans on the handle's device; built
// once per shape, run every step. Device pointers; bf16 tensors as raw 16-bit words.
class AttentionGraphs {
 public:
  // Throws Error naming the shape and cuDNN's reason when a graph cannot be built.
  AttentionGraphs(const CudnnHandle& handle, const AttentionShape& shape);
  ~AttentionGraphs();
  AttentionGraphs(const AttentionGraphs&) = delete;
  AttentionGraphs& operator=(const AttentionGraphs&) = delete;

  const AttentionShape& shape() const;
  // Device memory the larger of the two plans needs; the caller keeps it.
  size_t workspace_bytes() const;
  // row_max is written only when the shape asks for it (nullptr otherwise).
  void forward(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,
               float* row_max, void* workspace) const;
  void backward(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* out,
                const uint16_t* dout, const float* lse, uint16_t* dq, uint16_t* dk, uint16_t* dv,
                void* workspace) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The graphs of every shape a run asks for, built on first use on the current device (the CUDA
// backend's bf16 attention). A shape cuDNN cannot build is remembered with cuDNN's reason and
// answers nullptr, so the caller runs its own kernel instead; each such shape is reported once on
// stderr, as it costs speed, not correctness. When cuDNN's handle cannot be made at all (a
// library that does not load), every shape answers nullptr. A graph that was built but fails
// to execute is an Error: that is a fault to see, not a shape to route around.
class AttentionGraphCache {
 public:
  AttentionGraphCache();
  ~AttentionGraphCache();
  AttentionGraphCache(const AttentionGraphCache&) = delete;
  AttentionGraphCache& operator=(const AttentionGraphCache&) = delete;

  // Graphs whose forward writes row_max exactly when `shape` asks for it.
  const AttentionGraphs* forward(const AttentionShape& shape);
  // Graphs of `shape`'s dimensions, whatever their forward's row_max (backward reads none).
  const AttentionGraphs* backward(const AttentionShape& shape);

 private:
  struct Entry {
    AttentionShape shape;
    std::unique_ptr<AttentionGraphs> graphs;  // null: cuDNN refused the shape
  };
  const AttentionGraphs* find_or_build(const AttentionShape& shape, bool any_row_max);

  std::unique_ptr<CudnnHandle> handle_;  // made with the first graphs
  bool no_cudnn_ = false;                // the handle could not be made: no shape tries again
  std::vector<Entry> entries_;
};

}  // namespace moetron::cuda
