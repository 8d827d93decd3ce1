// DeepSeek-V3 mixture-of-experts FFN (docs/moe.md): router -> dispatch plan -> permute ->
// grouped expert GEMMs -> un-permute and combine with the gates, plus shared experts.
// The permuted rows (x_perm_ in, out_perm_ back) are the seam where expert parallelism will
// exchange tokens between ranks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/dims.h"
#include "models/feed_forward.h"
#include "models/params.h"
#include "models/swiglu.h"

namespace moetron {

// What one forward measured: routing statistics and the balance losses (weighted).
struct MoeStats {
  std::vector<int64_t> counts;  // assignments per expert (after top-k, before capacity)
  int64_t dropped = 0;          // assignments dropped by the capacity limit
  ops::BalanceLosses losses;
};

class MoE : public FeedForward {
 public:
  // prefix names the module, e.g. "model.layers.3.mlp."
  MoE(ParamTable& params, const std::string& prefix, const ModelDims& dims);
  void forward(const Tensor& x, Tensor& y) override;
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;

  // Weight of the balance losses' gradients in backward (the loss scale of the micro-batch).
  void set_aux_grad_scale(float scale) { aux_grad_scale_ = scale; }
  const MoeStats& stats() const { return stats_; }
  // Routing of the last forward: chosen experts [N, k] (i32), gates [N, k], and the plan.
  const Tensor& topk_idx() const { return topk_idx_; }
  const Tensor& gates() const { return gates_; }
  const ops::DispatchPlan& plan() const { return plan_; }
  // The aux-loss-free update: bias_e += speed * sign(mean(counts) - counts_e).
  void update_bias(std::span<const int64_t> counts, float speed);
  const ParamRef& bias() const { return bias_; }
  const std::string& name() const { return name_; }

 private:
  std::vector<Tensor> expert_gate_up() const;
  std::vector<Tensor> expert_down() const;

  const ParamTable& params_;
  std::string name_;
  ops::RouterConfig router_;
  ops::BalanceConfig balance_;
  int64_t capacity_ = 0;  // per expert; 0 = dropless
  ParamRef gate_, bias_;
  std::vector<ParamRef> gate_proj_, up_proj_, down_proj_;
  std::unique_ptr<SwiGLU> shared_;
  float aux_grad_scale_ = 1.0f;
  MoeStats stats_;
  ops::DispatchPlan plan_;
  // Saved activations.
  Tensor logits_, scores_, topk_idx_, gates_, x_perm_, gate_up_, act_, out_perm_;
  // Gradient scratch.
  Tensor dlogits_, dscores_, dgates_, d_out_perm_, d_act_, d_gate_up_, dx_perm_, d_shared_;
};

}  // namespace moetron
