// AdamW over the parameter table, with global-norm gradient clipping (torch semantics). It
// updates the element ranges it is given (all of them, or under ZeRO-1 this rank's part) and
// keeps moments for those alone.
#pragma once

#include <utility>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/params.h"

namespace moetron {

class AdamW {
 public:
  // owned: [begin, end) element ranges of the flat buffers, ascending; empty = everything.
  AdamW(ParamTable& params, const config::OptimizerConfig& cfg,
        std::vector<std::pair<int64_t, int64_t>> owned = {});
  // Clips the owned gradients to cfg.grad_clip given the global norm, then applies one AdamW
  // step to the owned parameters.
  void step(double lr, double grad_norm);
  int64_t steps() const { return step_; }

  // The state a checkpoint keeps: the owned ranges, their first and second moments (range
  // after range), and the step count.
  const std::vector<std::pair<int64_t, int64_t>>& owned() const { return owned_; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  void set_steps(int64_t steps) { step_ = steps; }

 private:
  ParamTable& params_;
  config::OptimizerConfig cfg_;
  std::vector<std::pair<int64_t, int64_t>> owned_;
  Tensor m_, v_;  // moments of the owned elements, range after range
  int64_t step_ = 0;
};

}  // namespace moetron
