// The ATTENTION mixer (MHA/GQA with RoPE): o_proj(attn(rope(q), rope(k), v)), RoPE over the
// first rope_dim dims of each head (all, or partial RoPE). Two options make it Qwen3-Next's gated
// attention: qk_norm (per-head RMSNorms q_norm and k_norm before RoPE) and output_gate (q_proj
// gives per head [q | gate], and o_proj reads attn * sigmoid(gate)).
// q_proj, k_proj and v_proj are registered consecutively and run as one fused GEMM. Under
// tensor parallelism each rank holds heads/tp query heads and kv_heads/tp key/value heads
// (column-parallel q/k/v, row-parallel o_proj; the q/k norms replicated, their gradients summed
// over the group). Decoding state: the KV cache (models/kv_cache.h).
#pragma once

#include <optional>
#include <string>

#include "models/mixer.h"
#include "models/rmsnorm.h"
#include "models/row_buffer.h"

namespace moetron {

class Attention final : public TokenMixer {
 public:
  // prefix names the module, e.g. "model.layers.0.self_attn."; rope covers the window.
  Attention(ParamTable& params, const std::string& prefix, const ModelDims& dims,
            const RopeTables& rope, const Runtime& rt);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;
  // keys_t [kv_heads, head_dim, max_len], values [max_len, kv_heads, head_dim].
  std::vector<Shape> decode_state(int64_t max_len) const override;
  Tensor& max_logits() override { return max_logits_; }
  void reset_max_logits() override;
  // A key serves a group of heads, so the whole factor goes on each head's query rows (not with
  // qk_norm, which undoes any such scaling: configs refuse QK-clip there).
  void qk_clip(std::span<const float> gamma) override;

 private:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;
  void train_forward(const Tensor& x, Tensor& y);
  // The new keys (after RoPE) and values go into the cache, and each query attends over every
  // cached position up to its own.
  void decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step);
  // qkv [n, q_proj rows + 2 kv_width] -> q and k [n, heads, head_dim] (normed with qk_norm,
  // before RoPE), v [n, kv_width], and the gate [n, heads, head_dim] with output_gate (qg [n,
  // q_proj rows] holds q_proj's part, [q | gate] per head); q_raw and k_raw receive q and k
  // before their norms (qk_norm only).
  void split_projection(const Tensor& qkv, Tensor& qg, Tensor& q_raw, Tensor& q, Tensor& gate,
                        Tensor& k_raw, Tensor& k, Tensor& v);
  int64_t q_rows() const { return (output_gate_ ? 2 : 1) * q_width_; }  // q_proj's rows here

  const ParamTable& params_;
  const RopeTables& rope_;
  int64_t rows_, heads_, kv_heads_, head_dim_, q_width_, kv_width_;
  bool output_gate_;
  float scale_;     // 1 / sqrt(head_dim)
  DType operands_;  // of the attention itself: the run's compute dtype (docs/precision.md)
  Communicator* tp_comm_;
  ParamRef q_proj_, k_proj_, v_proj_, o_proj_;
  std::optional<RMSNorm> q_norm_, k_norm_;                                      // qk_norm
  Tensor qkv_, q_raw_, k_raw_, qg_, gate_, q_, k_, v_, out_, gated_, lse_;      // saved activations
  Tensor row_max_, max_logits_;                                                 // QK-clip's measure
  Tensor dout_, dgated_, dgate_, dq_, dk_, dv_, dqg_, dq_raw_, dk_raw_, dqkv_;  // gradient scratch
  Tensor tp_norm_grads_;  // tp > 1 with qk_norm: [q_norm | k_norm] gradients, summed over tp
  RowBuffer decode_qkv_, decode_qg_, decode_qraw_, decode_kraw_, decode_gate_, decode_q_, decode_k_,
      decode_out_;
};

}  // namespace moetron
