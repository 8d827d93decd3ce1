// The MLA mixer: DeepSeek-V2/V3 multi-head latent attention (docs/model.md has the equations).
//   down = x [W_DQ | W_DKV]^T   (q_a_proj and kv_a_proj_with_mqa, one fused GEMM; without
//                                q_lora_rank q_proj takes W_DQ's place and there is no q norm)
//   q = q_b_proj(q_a_layernorm(c_Q)),  [c_KV | k_R] = the rest of down
//   [k_C | v] per head = kv_b_proj(kv_a_layernorm(c_KV)),  RoPE on q's rope part and on k_R,
//   one RoPE key shared by every head
//   out = attn([q_C | q_R], [k_C | k_R], v) with scale (nope + rope)^-1/2 * YaRN's mscale^2
//   y = o_proj(out)
// Tensor parallelism as Megatron-Core's: the down-projections and the latent norms replicated,
// q_b_proj (q_proj) and kv_b_proj split by heads, o_proj row-parallel. Each rank's backward
// gives only its heads' share of the replicated weights' gradients, so those are summed over
// the group (one all-reduce per backward, of those weights' size).
//
// Decoding runs the absorbed form: the cache holds per position only the normalised latent
// c'_KV and the rotated shared key k_R (kv_lora_rank + qk_rope_head_dim values per layer);
// each head's query absorbs W_UK (q~ = W_UK^T q_C), attends over the latent, and W_UV expands
// the result (tests/generate/ check it against the expanded training form).
#pragma once

#include <optional>
#include <string>

#include "models/mixer.h"
#include "models/rmsnorm.h"
#include "models/row_buffer.h"

namespace moetron {

class Mla final : public TokenMixer {
 public:
  Mla(ParamTable& params, const std::string& prefix, const ModelDims& dims, const RopeTables& rope,
      const Runtime& rt);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;
  // The latent cache [max_len, kv_lora_rank + qk_rope_head_dim]: rows [c'_KV | rotated k_R].
  std::vector<Shape> decode_state(int64_t max_len) const override;
  Tensor& max_logits() override { return max_logits_; }
  void reset_max_logits() override;
  // Kimi K2's rule: head h's q_C rows (of q_b_proj or q_proj) and k_C rows (of kv_b_proj) by
  // sqrt(gamma), its q_R rows by gamma; the shared RoPE key and the values untouched.
  void qk_clip(std::span<const float> gamma) override;

 private:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;
  void train_forward(const Tensor& x, Tensor& y);
  void decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step);
  // The query path's first projection: q_a_proj, or q_proj without a q LoRA.
  bool q_lora() const { return dims_.q_lora > 0; }
  int64_t q_down_width() const { return q_lora() ? dims_.q_lora : heads_ * dims_.qk(); }

  const ParamTable& params_;
  const RopeTables& rope_;
  MlaDims dims_;
  int64_t batch_, seq_, rows_, heads_;
  float scale_;
  DType operands_;  // of the attention itself: the run's compute dtype (docs/precision.md)
  Communicator* tp_comm_;
  ParamRef q_down_, kv_down_;      // adjacent: one fused [q_down_width + kv_lora + rope, hidden]
  std::optional<RMSNorm> q_norm_;  // with a q LoRA only
  ParamRef q_b_;
  RMSNorm kv_norm_;
  ParamRef kv_b_, o_proj_;

  // Training activations, saved for backward.
  Tensor down_, cq_, c_, kr_, cqn_, q_, cn_, kvb_, qc_, qr_, kc_, qf_, kf_, v_, out_, lse_;
  Tensor row_max_, max_logits_;  // QK-clip's measure
  // Gradient scratch.
  Tensor dout_, dqf_, dkf_, dv_, dkc_, dkr_, dkvb_, dcn_, dc_, dqc_, dqr_, dq_, dcqn_, dcq_, ddown_;
  // Under tp > 1: [fused down | q norm | kv norm] gradients of one backward, reduced over the
  // group before they are added to the parameters' (the q_proj rows are not replicated and
  // stay out of the reduction).
  Tensor tp_grads_;
  // Decoding.
  RowBuffer d_down_, d_cq_, d_c_, d_kr_, d_cqn_, d_q_, d_cn_, d_qh_, d_qc_, d_qr_, d_qt_, d_qabs_,
      d_lat_, d_oh_, d_o_;
};

}  // namespace moetron
