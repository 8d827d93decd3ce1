// A device's implementation of the op set, chosen from the tensors' device (ggml's backend
// interface is the model). core/ops.cc checks every op's shapes, dtypes and devices once, then
// calls the backend of its tensors' device, so a backend sees checked arguments only and holds
// no shape logic of its own. Every argument is a Tensor on that device, index arguments (token
// ids, targets, expert indices, counts, offsets, the dispatch plan) included, and so is every
// result: losses and norms are added into f64 scalars on the device, which the train step reads
// once per step.
//
// The CPU backend (core/cpu/backend.cc) is always present. Another registers itself where the
// build and the machine have its device; backends() lists what this process can use, so the op
// harness runs every case on each (tests/core/test_ops.cc).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moetron {

namespace ops {
enum class RopeStyle;
struct VocabShard;
struct AdamWStep;
struct RouterConfig;
struct BalanceConfig;
struct DispatchPlan;
struct PlanSlice;
}  // namespace ops

// What a backend's tensors (and a device backend's kernel scratch) hold: bytes allocated now and
// the most at any time since the last reset_peak() (the caching allocators'
// max_memory_allocated). `kernel_scratch`: of those, the one buffer a device backend's kernels
// share, as large as the largest any op has asked for; the meta backend allocates none and
// states what the device backend would hold for the same ops since the last reset_peak() (its
// gated delta rule's work: the largest by far), for `moetron plan` on a GPU.
struct MemoryUse {
  int64_t live = 0, peak = 0;
  int64_t kernel_scratch = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // "cpu (oneDNN sgemm)": the device and what does its GEMMs, for logs and benchmarks.
  virtual std::string name() const = 0;

  // Memory of this device; allocate throws Error naming the device and the size when it cannot.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* data, size_t bytes) noexcept = 0;
  virtual MemoryUse memory_use() const = 0;
  virtual void reset_peak() = 0;
  // `bytes` from `src` to `dst`, where each is on this device or the host (the CPU).
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                          size_t bytes) = 0;
  virtual void zero_bytes(void* data, size_t bytes) = 0;
  // Waits for the work given to the device so far.
  virtual void synchronize() = 0;
  // Copies from this device to the host so far: each waits for the device's work before it, so
  // on a GPU they are what a step's host reads cost (docs/gpu.md). None on the CPU's own.
  virtual int64_t host_reads() const { return 0; }
  // Copies from the host to this device so far. From pageable memory CUDA waits for the device's
  // work before each (cudaMemcpy's rules), so on a GPU they cost what a read does.
  virtual int64_t host_writes() const { return 0; }

  // The op set of core/ops.h and core/ops_decode.h, with the same meaning, arguments checked.
  virtual void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                      float alpha, float beta) = 0;
  virtual void grouped_matmul(const Tensor& x, std::span<const Tensor> weights,
                              const Tensor& offsets, Tensor& y) = 0;
  virtual void grouped_matmul_backward(const Tensor& dy, const Tensor& x,
                                       std::span<const Tensor> weights, const Tensor& offsets,
                                       std::span<Tensor> dweights, Tensor& dx) = 0;
  virtual void fill(Tensor& x, float value) = 0;
  virtual void cast(const Tensor& src, Tensor& dst) = 0;
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  virtual void scale(Tensor& x, float s) = 0;
  virtual void sum_squares(const Tensor& x, Tensor& sum) = 0;
  virtual void concat_cols(std::span<const Tensor> srcs, Tensor& dst) = 0;
  virtual void split_cols(const Tensor& src, std::span<Tensor> dsts) = 0;
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y,
                               Tensor& rstd) = 0;
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                const Tensor& rstd, Tensor& dx, Tensor& dweight,
                                bool accumulate_dx) = 0;
  virtual void concat_heads(const Tensor& a, const Tensor& b, Tensor& dst) = 0;
  virtual void split_heads(const Tensor& src, Tensor& a, Tensor& b) = 0;
  virtual void transpose01(const Tensor& src, Tensor& dst) = 0;
  virtual void rope_tables(const Tensor& inv_freq, float attention_factor, Tensor& cos,
                           Tensor& sin) = 0;
  virtual void rope(Tensor& x, const Tensor& cos, const Tensor& sin, ops::RopeStyle style,
                    bool inverse) = 0;
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                                 Tensor& out, Tensor& lse, Tensor* row_max, DType operands) = 0;
  virtual void head_max(const Tensor& row_max, Tensor& acc) = 0;
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, float scale, const Tensor& out,
                                  const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                                  DType operands) = 0;
  virtual void swiglu_forward(const Tensor& gate_up, Tensor& out) = 0;
  virtual void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) = 0;
  virtual void sigmoid_gate(const Tensor& x, const Tensor& gate, Tensor& y) = 0;
  virtual void sigmoid_gate_backward(const Tensor& dy, const Tensor& x, const Tensor& gate,
                                     Tensor& dx, Tensor& dgate) = 0;
  // core/ops_linear_attention.h.
  virtual void gated_delta_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& g, const Tensor& beta, Tensor& out,
                                   Tensor& states) = 0;
  virtual void gated_delta_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& g, const Tensor& beta,
                                    const Tensor& states, Tensor& dq, Tensor& dk, Tensor& dv,
                                    Tensor& dg, Tensor& dbeta) = 0;
  virtual void gated_delta_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                const Tensor& beta, Tensor& state, Tensor& out) = 0;
  virtual void conv_silu_forward(const Tensor& x, const Tensor& w, Tensor& pre, Tensor& y) = 0;
  virtual void conv_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                  const Tensor& pre, Tensor& dx, Tensor& dw) = 0;
  virtual void conv_silu_step(const Tensor& x, const Tensor& w, Tensor& state, Tensor& y) = 0;
  virtual void l2norm_forward(const Tensor& x, float eps, float scale, Tensor& y,
                              Tensor& rnorm) = 0;
  virtual void l2norm_backward(const Tensor& dy, const Tensor& x, const Tensor& rnorm, float scale,
                               Tensor& dx) = 0;
  virtual void gdn_gates_forward(const Tensor& a, const Tensor& b, const Tensor& a_log,
                                 const Tensor& dt_bias, Tensor& g, Tensor& beta) = 0;
  virtual void gdn_gates_backward(const Tensor& dg, const Tensor& dbeta, const Tensor& a,
                                  const Tensor& a_log, const Tensor& dt_bias, const Tensor& beta,
                                  Tensor& da, Tensor& db, Tensor& da_log, Tensor& ddt_bias) = 0;
  virtual void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, float eps,
                                     Tensor& y, Tensor& rstd) = 0;
  virtual void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z,
                                      const Tensor& w, const Tensor& rstd, Tensor& dx, Tensor& dz,
                                      Tensor& dw) = 0;
  // Ids outside [0, shard.vocab): an Error naming the id, or counted into `outside` when that is
  // set (ops::embedding_forward).
  virtual void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out,
                                 const ops::VocabShard& shard, Tensor* outside) = 0;
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable,
                                  const ops::VocabShard& shard) = 0;
  virtual int64_t ce_workspace_size(int64_t rows, int64_t vocab) = 0;
  virtual void ce_shard_stats(const Tensor& logits, const Tensor& targets,
                              const ops::VocabShard& shard, Tensor& stats, Tensor* outside) = 0;
  virtual void ce_combine_stats(const Tensor& all_stats, Tensor& lse, Tensor& loss_sum) = 0;
  virtual void ce_shard_backward(Tensor& logits, const Tensor& targets,
                                 const ops::VocabShard& shard, const Tensor& lse,
                                 float grad_scale) = 0;
  virtual void head_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets,
                                  float grad_scale, Tensor* dh, Tensor* dw, Tensor& workspace,
                                  Tensor& loss_sum, Tensor* outside) = 0;
  virtual void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                     const ops::AdamWStep& s) = 0;
  virtual void router_forward(const Tensor& logits, const Tensor& bias,
                              const ops::RouterConfig& cfg, Tensor& scores, Tensor& topk_idx,
                              Tensor& gates) = 0;
  virtual void router_backward(const Tensor& dgates, const Tensor& scores, const Tensor& topk_idx,
                               const ops::RouterConfig& cfg, Tensor& dscores, Tensor& dlogits) = 0;
  virtual void balance_losses(const Tensor& logits, const Tensor& scores, const Tensor& counts,
                              const ops::RouterConfig& rc, const ops::BalanceConfig& bc,
                              float grad_scale, Tensor* dscores, Tensor* dlogits, Tensor* sums) = 0;
  virtual void plan_dispatch(const Tensor& topk_idx, const Tensor& scores, int64_t capacity,
                             ops::DispatchPlan& plan, ops::PlanSlice* slice) = 0;
  virtual void gather_rows(const Tensor& src, const Tensor& row_token, Tensor& dst) = 0;
  virtual void combine_rows(const Tensor& src, const Tensor& slot_row, const Tensor& weights,
                            int64_t k, Tensor& dst, bool accumulate) = 0;
  virtual void combine_rows_backward(const Tensor& dy, const Tensor& src, const Tensor& slot_row,
                                     const Tensor& weights, int64_t k, Tensor& dsrc,
                                     Tensor& dweights) = 0;
  virtual void balance_bias_update(Tensor& bias, const Tensor& counts, float speed) = 0;
  virtual void attention_decode(const Tensor& q, const Tensor& keys_t, const Tensor& values,
                                int64_t start, Tensor& out) = 0;
  virtual void store_keys(const Tensor& k, int64_t start, Tensor& keys_t) = 0;
  virtual void attention_decode_latent(const Tensor& q, const Tensor& cache, int64_t start,
                                       float scale, Tensor& out) = 0;
  virtual void linear_rows(const Tensor& x, const Tensor& wt, Tensor& y) = 0;
  virtual void transpose(const Tensor& src, Tensor& dst) = 0;
};

// The backend of `device`; throws Error naming the device when this build or machine has none.
Backend& backend(Device device);
// Every backend this process can use, the CPU's first.
std::vector<Backend*> backends();
// The backend of a call on `tensors` (those not defined are skipped), named `op` in the error
// when they are not all on one device.
Backend& backend_of(const char* op, std::initializer_list<const Tensor*> tensors);
// Adds the backend of another device (a device backend registers itself once, when it finds its
// device); the CPU's is built in.
void register_backend(std::unique_ptr<Backend> backend);

// The CPU backend: today's kernels (core/cpu/).
std::unique_ptr<Backend> make_cpu_backend();
// The device backend's code (core/kernels/device_backend.inc) on the host launchers of the
// shared kernels, as device cpu:1: what the op harness runs in CI in place of a GPU. Not
// registered by default; a test registers it.
std::unique_ptr<Backend> make_host_kernels_backend();
// The CUDA backend of device 0 (core/cuda/backend.cc; builds with CUDA only). Registered by the
// registry itself where the build has CUDA and the machine a GPU.
std::unique_ptr<Backend> make_cuda_backend();
// The meta backend (core/meta_backend.cc): memory that is counted, never allocated, and ops that
// do nothing (reads to the host give zeros). backend() answers it for DeviceKind::meta;
// backends() leaves it out, as it computes nothing.
Backend& meta_backend();

}  // namespace moetron
