// DeepSeek-V3 mixture-of-experts FFN (docs/moe.md): router -> dispatch plan -> permute ->
// grouped expert GEMMs -> un-permute and combine with the gates, plus shared experts.
//
// In parallel (docs/parallelism.md): every rank of a tensor-parallel group routes all tokens of
// the micro-batch (the router is small, and routing, capacity and the balance losses then keep
// their single-process meaning exactly), but dispatches only its slice of them (rows
// [rows / tp * tp_rank, ...)); the TokenDispatcher sends them to the expert-parallel ranks that
// hold their experts (n_routed_experts / ep per rank). Shared experts are split like a dense
// FFN. forward returns this rank's partial sum of the output (routed rows of its slice plus its
// part of the shared experts) and backward its partial sum of dx; the block sums them.
//
// Decoding (models/decode_step.h; one rank) routes as training does (router, biased selection,
// unbiased gates, groups, shared experts) but dropless: every token reaches its k experts
// whatever capacity_factor the model was trained with (a capacity is a batch-level training
// device, and one token has no batch), and no statistics are kept.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "models/dims.h"
#include "models/feed_forward.h"
#include "models/params.h"
#include "models/row_buffer.h"
#include "models/swiglu.h"
#include "models/token_dispatcher.h"

namespace moetron {

// What one forward measured on the host: routing statistics (the balance losses go to a device
// sums tensor, set_balance_sums()).
struct MoeStats {
  std::vector<int64_t> counts;  // assignments per expert (after top-k, before capacity)
  int64_t dropped = 0;          // assignments dropped by the capacity limit
  // This rank's dispatch: the rows it sends, those of them that leave the rank, the rows its
  // experts receive from other ranks, and every row its experts compute (its load).
  int64_t rows_sent = 0, rows_off_rank = 0, rows_received_off_rank = 0, rows_received = 0;
};

class MoE : public FeedForward {
 public:
  // prefix names the module, e.g. "model.layers.3.mlp."
  MoE(ParamTable& params, const std::string& prefix, const ModelDims& dims, const Runtime& rt);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;

  // Weight of the balance losses' gradients in backward (the loss scale of the micro-batch).
  void set_aux_grad_scale(float scale) { aux_grad_scale_ = scale; }
  // Where the training forward adds its balance losses and routing entropy: [ops::kBalanceSums]
  // f64 on the device (ops::BalanceSum order); undefined: not computed (a forward for logits).
  void set_balance_sums(Tensor sums) { balance_sums_ = std::move(sums); }
  const Tensor& balance_sums() const { return balance_sums_; }
  const MoeStats& stats() const { return stats_; }
  // Routing of the last forward (all tokens of the micro-batch): chosen experts [N, k] (i32),
  // gates [N, k], and the plan.
  const Tensor& topk_idx() const { return topk_idx_; }
  const Tensor& gates() const { return gates_; }
  const ops::DispatchPlan& plan() const { return plan_; }
  // The aux-loss-free update: bias_e += speed * sign(mean(counts) - counts_e).
  void update_bias(std::span<const int64_t> counts, float speed);
  const ParamRef& bias() const { return bias_; }
  const std::string& name() const { return name_; }

 protected:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;

 private:
  void train_forward(const Tensor& x, Tensor& y);
  void decode(const Tensor& x, Tensor& y, const DecodeStep& step);
  // This rank's share of the plan (tp > 1: its slice of the tokens): the rows it sends per
  // expert, their tokens, and each slot's row among them.
  std::span<const int64_t> send_counts();
  Tensor row_tokens() const { return whole_ ? plan_.row_tokens() : slice_.row_tokens(); }
  Tensor slot_rows() const { return whole_ ? plan_.slot_row : slice_.slot_row; }
  // Views of this rank's expert weights (gate|up fused), made on first use: the parameters are
  // allocated after the layers register them, and never move.
  const std::vector<Tensor>& expert_gate_up();
  const std::vector<Tensor>& expert_down();

  const ParamTable& params_;
  Device device_;  // first: the buffers below are made on it
  std::string name_;
  ops::RouterConfig router_;
  ops::BalanceConfig balance_;
  int64_t capacity_ = 0;  // per expert; 0 = dropless
  int64_t hidden_, inter_;
  int64_t slice_begin_, slice_end_;  // this rank's tokens
  bool whole_;                       // tp = 1: the slice is every token
  Communicator* tp_comm_;
  TokenDispatcher dispatcher_;
  ParamRef gate_, bias_;
  std::vector<ParamRef> gate_proj_, up_proj_, down_proj_;  // this rank's experts
  std::vector<Tensor> gate_up_views_, down_views_;
  std::unique_ptr<SwiGLU> shared_;
  // Qwen's shared-expert gate: the shared experts' output times sigmoid(x . w) per token.
  // Applies the gate to shared_out (the shared experts' output of x, [n, hidden]) into y, with
  // logit [n, 1] receiving x . w.
  void gate_shared(const Tensor& x, const Tensor& shared_out, Tensor& logit, Tensor& y,
                   const DecodeStep* step);
  ParamRef shared_gate_;
  Tensor shared_out_, shared_logit_, d_shared_scaled_, d_shared_logit_;
  RowBuffer decode_shared_{DType::f32, device_}, decode_shared_logit_{DType::f32, device_};
  float aux_grad_scale_ = 1.0f;
  Tensor balance_sums_;
  MoeStats stats_;
  ops::DispatchPlan plan_;
  std::vector<int64_t> send_counts_;  // [experts] tp = 1: the plan's kept rows per expert
  ops::PlanSlice slice_;              // tp > 1: this rank's slice of the plan
  // Router tensors over all tokens, saved for backward.
  Tensor logits_, scores_, topk_idx_, gates_;
  Tensor dlogits_, dscores_, dgates_, dgates_slice_, d_shared_;
  // Rows of this rank: sent (its slice, by global expert) and local (its experts' inputs).
  RowBuffer x_sent_buf_{DType::f32, device_}, x_local_buf_{DType::f32, device_};
  RowBuffer gate_up_buf_{DType::f32, device_}, act_buf_{DType::f32, device_};
  RowBuffer out_local_buf_{DType::f32, device_}, out_sent_buf_{DType::f32, device_};
  RowBuffer d_sent_buf_{DType::f32, device_}, d_local_buf_{DType::f32, device_};
  RowBuffer d_act_buf_{DType::f32, device_}, d_gate_up_buf_{DType::f32, device_};
  RowBuffer dx_local_buf_{DType::f32, device_};
  Tensor x_sent_, x_local_, gate_up_, act_, out_local_, out_sent_;  // saved for backward
  // Decoding: the plan's buffers for the most tokens so far, and the router's tensors.
  ops::DispatchPlan decode_plan_;
  RowBuffer decode_logits_{DType::f32, device_}, decode_scores_{DType::f32, device_};
  RowBuffer decode_topk_{DType::i32, device_}, decode_gates_{DType::f32, device_};
};

}  // namespace moetron
