#include "models/swiglu.h"

#include "core/ops.h"
#include "models/linear.h"

namespace moetron {

SwiGLU::SwiGLU(ParamTable& params, const std::string& prefix, int64_t hidden, int64_t intermediate,
               int64_t rows)
    : params_(params),
      gate_(params.add(prefix + "gate_proj.weight", {intermediate, hidden}, ParamKind::matrix,
                       {ShardGroup::tensor, 0})),
      up_(params.add(prefix + "up_proj.weight", {intermediate, hidden}, ParamKind::matrix,
                     {ShardGroup::tensor, 0})),
      down_(params.add(prefix + "down_proj.weight", {hidden, intermediate}, ParamKind::matrix,
                       {ShardGroup::tensor, 1})),
      gate_up_(Tensor::empty({rows, 2 * intermediate})),
      act_(Tensor::empty({rows, intermediate})),
      dact_(Tensor::empty({rows, intermediate})),
      dgate_up_(Tensor::empty({rows, 2 * intermediate})) {}

void SwiGLU::forward(const Tensor& x, Tensor& y) {
  linear_forward(x, params_.fused_value(gate_, up_), gate_up_);
  ops::swiglu_forward(gate_up_, act_);
  linear_forward(act_, down_.value(), y);
}

void SwiGLU::backward(const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor ddown = down_.grad();
  linear_backward(dy, act_, down_.value(), ddown, dact_);
  ops::swiglu_backward(dact_, gate_up_, dgate_up_);
  Tensor dgu = params_.fused_grad(gate_, up_);
  linear_backward(dgate_up_, x, params_.fused_value(gate_, up_), dgu, dx);
}

}  // namespace moetron
