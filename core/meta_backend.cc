// The meta backend: tensors with shapes and no memory. A model built on it (the plan of a run,
// trainer/plan.h) allocates nothing, yet its allocations are counted, so the plan of a
// 671B-parameter layout takes the shapes the real layers ask for, stated once, in those layers.
// Every op does nothing, so a model can also run a training step on it and its layers allocate
// the buffers a step needs, at the step's shapes; what the host reads back is zeros (an MoE
// layer's routing then sends no rows: the plan sizes those buffers itself).
#include <algorithm>
#include <cstring>
#include <string>

#include "core/backend.h"
#include "core/kernels/gated_delta_work.h"
#include "core/memory_counter.h"

namespace moetron {
namespace {

class MetaBackend final : public Backend {
 public:
  Device device() const override { return {DeviceKind::meta, 0}; }
  std::string name() const override { return "meta (shapes only)"; }

  // No memory: null data, which nothing may read.
  void* allocate(size_t bytes) override {
    memory_.allocated(bytes);
    return nullptr;
  }
  void release(void*, size_t bytes) noexcept override { memory_.released(bytes); }
  MemoryUse memory_use() const override {
    MemoryUse use = memory_.use();
    use.kernel_scratch = kernel_scratch_;
    return use;
  }
  void reset_peak() override {
    memory_.reset_peak();
    kernel_scratch_ = 0;
  }
  void copy_bytes(void* dst, Device dst_device, const void*, Device, size_t bytes) override {
    if (dst_device.kind != DeviceKind::meta) std::memset(dst, 0, bytes);
  }
  void zero_bytes(void*, size_t) override {}
  void synchronize() override {}
  void fill(Tensor&, float) override {}
  void cast(const Tensor&, Tensor&) override {}
  void copy(const Tensor&, Tensor&) override {}
  void rope_tables(const Tensor&, float, Tensor&, Tensor&) override {}
  // The CPU's workspace: the size a real run of this shape takes.
  int64_t ce_workspace_size(int64_t rows, int64_t vocab) override {
    return backend(Device{}).ce_workspace_size(rows, vocab);
  }

  void matmul(const Tensor&, bool, const Tensor&, bool, Tensor&, float, float) override {}
  void grouped_matmul(const Tensor&, std::span<const Tensor>, const Tensor&, Tensor&) override {}
  void grouped_matmul_backward(const Tensor&, const Tensor&, std::span<const Tensor>, const Tensor&,
                               std::span<Tensor>, Tensor&) override {}
  void add(const Tensor&, const Tensor&, Tensor&) override {}
  void axpy(float, const Tensor&, Tensor&) override {}
  void scale(Tensor&, float) override {}
  void sum_squares(const Tensor&, Tensor&) override {}
  void concat_cols(std::span<const Tensor>, Tensor&) override {}
  void split_cols(const Tensor&, std::span<Tensor>) override {}
  void rmsnorm_forward(const Tensor&, const Tensor&, float, Tensor&, Tensor&) override {}
  void rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                        Tensor&, bool) override {}
  void concat_heads(const Tensor&, const Tensor&, Tensor&) override {}
  void split_heads(const Tensor&, Tensor&, Tensor&) override {}
  void transpose01(const Tensor&, Tensor&) override {}
  void rope(Tensor&, const Tensor&, const Tensor&, ops::RopeStyle, bool) override {}
  void attention_forward(const Tensor&, const Tensor&, const Tensor&, float, Tensor&, Tensor&,
                         Tensor*, DType) override {}
  void head_max(const Tensor&, Tensor&) override {}
  void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float,
                          const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&, DType) override {
  }
  void swiglu_forward(const Tensor&, Tensor&) override {}
  void swiglu_backward(const Tensor&, const Tensor&, Tensor&) override {}
  void sigmoid_gate(const Tensor&, const Tensor&, Tensor&) override {}
  void sigmoid_gate_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&,
                             Tensor&) override {}
  void gated_delta_forward(const Tensor& q, const Tensor&, const Tensor& v, const Tensor&,
                           const Tensor&, Tensor&, Tensor&) override {
    device_scratch(kernels::gated_delta_work_bytes(kernels::gated_delta_dims(q, v), false));
  }
  void gated_delta_backward(const Tensor&, const Tensor& q, const Tensor&, const Tensor& v,
                            const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&,
                            Tensor&, Tensor&) override {
    device_scratch(kernels::gated_delta_work_bytes(kernels::gated_delta_dims(q, v), true));
  }
  void gated_delta_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        Tensor&, Tensor&) override {}
  void conv_silu_forward(const Tensor&, const Tensor&, Tensor&, Tensor&) override {}
  void conv_silu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                          Tensor&) override {}
  void conv_silu_step(const Tensor&, const Tensor&, Tensor&, Tensor&) override {}
  void l2norm_forward(const Tensor&, float, float, Tensor&, Tensor&) override {}
  void l2norm_backward(const Tensor&, const Tensor&, const Tensor&, float, Tensor&) override {}
  void gdn_gates_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                         Tensor&) override {}
  void gdn_gates_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, Tensor&, Tensor&, Tensor&, Tensor&) override {}
  void gated_rmsnorm_forward(const Tensor&, const Tensor&, const Tensor&, float, Tensor&,
                             Tensor&) override {}
  void gated_rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, Tensor&, Tensor&, Tensor&) override {}
  void embedding_forward(const Tensor&, const Tensor&, Tensor&, const ops::VocabShard&,
                         Tensor*) override {}
  void embedding_backward(const Tensor&, const Tensor&, Tensor&, const ops::VocabShard&) override {}
  void ce_shard_stats(const Tensor&, const Tensor&, const ops::VocabShard&, Tensor&,
                      Tensor*) override {}
  void ce_combine_stats(const Tensor&, Tensor&, Tensor&) override {}
  void ce_shard_backward(Tensor&, const Tensor&, const ops::VocabShard&, const Tensor&,
                         float) override {}
  void head_cross_entropy(const Tensor&, const Tensor&, const Tensor&, float, Tensor*, Tensor*,
                          Tensor&, Tensor&, Tensor*) override {}
  void adamw(Tensor&, const Tensor&, Tensor&, Tensor&, const ops::AdamWStep&) override {}
  void router_forward(const Tensor&, const Tensor&, const ops::RouterConfig&, Tensor&, Tensor&,
                      Tensor&) override {}
  void router_backward(const Tensor&, const Tensor&, const Tensor&, const ops::RouterConfig&,
                       Tensor&, Tensor&) override {}
  void balance_losses(const Tensor&, const Tensor&, const Tensor&, const ops::RouterConfig&,
                      const ops::BalanceConfig&, float, Tensor*, Tensor*, Tensor*) override {}
  void plan_dispatch(const Tensor&, const Tensor&, int64_t, ops::DispatchPlan&,
                     ops::PlanSlice*) override {}
  void gather_rows(const Tensor&, const Tensor&, Tensor&) override {}
  void combine_rows(const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&, bool) override {}
  void combine_rows_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                             Tensor&, Tensor&) override {}
  void balance_bias_update(Tensor&, const Tensor&, float) override {}
  void attention_decode(const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&) override {}
  void store_keys(const Tensor&, int64_t, Tensor&) override {}
  void attention_decode_latent(const Tensor&, const Tensor&, int64_t, float, Tensor&) override {}
  void linear_rows(const Tensor&, const Tensor&, Tensor&) override {}
  void transpose(const Tensor&, Tensor&) override {}

 private:
  // The device backend's kernel scratch grows to the largest request (MemoryUse).
  void device_scratch(size_t bytes) {
    kernel_scratch_ = std::max(kernel_scratch_, static_cast<int64_t>(bytes));
  }

  MemoryCounter memory_;
  int64_t kernel_scratch_ = 0;
};

}  // namespace

Backend& meta_backend() {
  static MetaBackend meta;
  return meta;
}

}  // namespace moetron
