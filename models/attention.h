// Self-attention sublayer (MHA/GQA with RoPE): o_proj(attn(rope(q), rope(k), v)).
// q_proj, k_proj and v_proj are registered consecutively and run as one fused GEMM. Under
// tensor parallelism each rank holds heads/tp query heads and kv_heads/tp key/value heads
// (column-parallel q/k/v, row-parallel o_proj): forward returns this rank's partial sum of the
// output, backward its partial sum of dx; the caller sums them over the group.
#pragma once

#include <string>

#include "models/decode_step.h"
#include "models/dims.h"
#include "models/params.h"
#include "models/rope.h"
#include "models/row_buffer.h"
#include "models/runtime.h"

namespace moetron {

class Attention {
 public:
  // prefix names the module, e.g. "model.layers.0.self_attn."; rope covers the window.
  Attention(ParamTable& params, const std::string& prefix, const ModelDims& dims,
            const RopeTables& rope, const Runtime& rt);
  // Training: x, y [batch * seq, hidden], causal within each sequence of the micro-batch.
  void forward(const Tensor& x, Tensor& y);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx);
  // Decoding (one rank): x, y [n, hidden] at positions [step.start, + n); the new keys (after
  // RoPE) and values go into step's cache, and each query attends over every cached position up
  // to its own.
  void forward(const Tensor& x, Tensor& y, const DecodeStep& step);

 private:
  const ParamTable& params_;
  const RopeTables& rope_;
  int64_t rows_, heads_, kv_heads_, head_dim_, q_width_, kv_width_;
  ParamRef q_proj_, k_proj_, v_proj_, o_proj_;
  Tensor qkv_, q_, k_, v_, out_, lse_;  // saved activations
  Tensor dout_, dq_, dk_, dv_, dqkv_;   // gradient scratch
  RowBuffer decode_qkv_, decode_q_, decode_k_, decode_out_;
};

}  // namespace moetron
