// Self-attention sublayer (MHA/GQA with RoPE): o_proj(attn(rope(q), rope(k), v)).
// q_proj, k_proj and v_proj are registered consecutively and run as one fused GEMM. Under
// tensor parallelism each rank holds heads/tp query heads and kv_heads/tp key/value heads
// (column-parallel q/k/v, row-parallel o_proj): forward returns this rank's partial sum of the
// output, backward its partial sum of dx; the caller sums them over the group.
#pragma once

#include <string>

#include "models/dims.h"
#include "models/params.h"

namespace moetron {

// cos/sin tables [seq, head_dim / 2], shared by every attention layer of a model.
struct RopeTables {
  Tensor cos, sin;
  ops::RopeStyle style = ops::RopeStyle::rotate_half;
  static RopeTables make(const ModelDims& dims);
};

class Attention {
 public:
  // prefix names the module, e.g. "model.layers.0.self_attn."
  Attention(ParamTable& params, const std::string& prefix, const ModelDims& dims,
            const RopeTables& rope);
  // x, y: [batch * seq, hidden]
  void forward(const Tensor& x, Tensor& y);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx);

 private:
  const ParamTable& params_;
  const RopeTables& rope_;
  int64_t rows_, q_width_, kv_width_;
  ParamRef q_proj_, k_proj_, v_proj_, o_proj_;
  Tensor qkv_, q_, k_, v_, out_, lse_;  // saved activations
  Tensor dout_, dq_, dk_, dv_, dqkv_;   // gradient scratch
};

}  // namespace moetron
