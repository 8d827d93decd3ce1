// AdamW over the parameter table, with global-norm gradient clipping (torch semantics).
#pragma once

#include "configs/moetron.pb.h"
#include "models/params.h"

namespace moetron {

class AdamW {
 public:
  AdamW(ParamTable& params, const config::OptimizerConfig& cfg);
  // Global L2 norm of the gradients (before clipping).
  double grad_norm() const;
  // Clips the gradients to cfg.grad_clip given their norm, then applies one AdamW step.
  void step(double lr, double grad_norm);

 private:
  ParamTable& params_;
  config::OptimizerConfig cfg_;
  Tensor m_, v_;  // moments, laid out like the flat parameter buffer
  int64_t step_ = 0;
};

}  // namespace moetron
