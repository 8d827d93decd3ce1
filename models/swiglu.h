// Dense SwiGLU FFN: down(silu(gate(x)) * up(x)). gate_proj and up_proj are registered next to
// each other and run as one fused [2I, d] GEMM. Under tensor parallelism (Megatron) gate and up
// are split by rows (column-parallel) and down by columns (row-parallel): forward returns this
// rank's partial sum of the output and backward its partial sum of dx; the caller sums them
// over the group.
#pragma once

#include <string>

#include "models/dims.h"
#include "models/feed_forward.h"
#include "models/params.h"
#include "models/row_buffer.h"
#include "models/runtime.h"

namespace moetron {

class SwiGLU : public FeedForward {
 public:
  // prefix names the module, e.g. "model.layers.0.mlp."; intermediate is the logical width.
  SwiGLU(ParamTable& params, const std::string& prefix, const ModelDims& dims, int64_t intermediate,
         const Runtime& rt);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;

 protected:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;

 private:
  const ParamTable& params_;
  int64_t local_;  // this rank's share of the intermediate width
  ParamRef gate_, up_, down_;
  RowBuffer gate_up_buf_, act_buf_;
  Tensor gate_up_, act_;    // of the last forward, for backward
  Tensor dact_, dgate_up_;  // gradient scratch
};

}  // namespace moetron
