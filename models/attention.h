// The ATTENTION mixer (MHA/GQA with RoPE): o_proj(attn(rope(q), rope(k), v)).
// q_proj, k_proj and v_proj are registered consecutively and run as one fused GEMM. Under
// tensor parallelism each rank holds heads/tp query heads and kv_heads/tp key/value heads
// (column-parallel q/k/v, row-parallel o_proj). Decoding state: the KV cache (models/kv_cache.h).
#pragma once

#include <string>

#include "models/mixer.h"
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
  // A key serves a group of heads, so the whole factor goes on each head's query rows.
  void qk_clip(std::span<const float> gamma) override;

 private:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;
  void train_forward(const Tensor& x, Tensor& y);
  // The new keys (after RoPE) and values go into the cache, and each query attends over every
  // cached position up to its own.
  void decode_forward(const Tensor& x, Tensor& y, const DecodeStep& step);

  const ParamTable& params_;
  const RopeTables& rope_;
  int64_t rows_, heads_, kv_heads_, head_dim_, q_width_, kv_width_;
  float scale_;  // 1 / sqrt(head_dim)
  ParamRef q_proj_, k_proj_, v_proj_, o_proj_;
  Tensor qkv_, q_, k_, v_, out_, lse_;  // saved activations
  Tensor row_max_, max_logits_;         // QK-clip's measure
  Tensor dout_, dq_, dk_, dv_, dqkv_;   // gradient scratch
  RowBuffer decode_qkv_, decode_q_, decode_k_, decode_out_;
};

}  // namespace moetron
