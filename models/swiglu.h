// Dense SwiGLU FFN: down(silu(gate(x)) * up(x)). gate_proj and up_proj are registered next to
// each other and run as one fused [2I, d] GEMM.
#pragma once

#include <string>

#include "models/feed_forward.h"
#include "models/params.h"

namespace moetron {

class SwiGLU : public FeedForward {
 public:
  // prefix names the module, e.g. "model.layers.0.mlp."
  SwiGLU(ParamTable& params, const std::string& prefix, int64_t hidden, int64_t intermediate,
         int64_t rows);
  void forward(const Tensor& x, Tensor& y) override;
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;

 private:
  const ParamTable& params_;
  ParamRef gate_, up_, down_;
  Tensor gate_up_, act_;    // saved activations
  Tensor dact_, dgate_up_;  // gradient scratch
};

}  // namespace moetron
