#include "models/swiglu.h"

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

SwiGLU::SwiGLU(ParamTable& params, const std::string& prefix, const ModelDims& d,
               int64_t intermediate, const Runtime& rt)
    : params_(params),
      local_(rt.tp.share(intermediate)),
      gate_up_buf_(DType::f32, rt.device),
      act_buf_(DType::f32, rt.device) {
  gate_ = params.add(prefix + "gate_proj.weight", {local_, d.hidden}, ParamKind::matrix,
                     rt.tp.shard(0, local_, intermediate));
  up_ = params.add(prefix + "up_proj.weight", {local_, d.hidden}, ParamKind::matrix,
                   rt.tp.shard(0, local_, intermediate));
  down_ = params.add(prefix + "down_proj.weight", {d.hidden, local_}, ParamKind::matrix,
                     rt.tp.shard(1, local_, intermediate));
  dact_ = rt.empty({d.rows(), local_});
  dgate_up_ = rt.empty({d.rows(), 2 * local_});
}

void SwiGLU::run(const Tensor& x, Tensor& y, const DecodeStep* step) {
  gate_up_ = gate_up_buf_.rows(x.rows(), 2 * local_);
  act_ = act_buf_.rows(x.rows(), local_);
  linear_forward(x, params_.fused_weight(gate_, up_), gate_up_, step);
  ops::swiglu_forward(gate_up_, act_);
  linear_forward(act_, down_.weight(), y, step);
}

void SwiGLU::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor ddown = down_.grad();
  linear_backward(dy, act_, down_.weight(), ddown, dact_);
  ops::swiglu_backward(dact_, gate_up_, dgate_up_);
  Tensor dgu = params_.fused_grad(gate_, up_);
  linear_backward(dgate_up_, x, params_.fused_weight(gate_, up_), dgu, dx);
}

}  // namespace moetron
