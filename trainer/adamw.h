// AdamW over element ranges of the parameter table, with global-norm gradient clipping (torch
// semantics; docs/optimizers.md): it updates the ranges it is given (all of them, or under
// ZeRO-1 this rank's part) of the parameters it holds and keeps moments for those alone. It
// needs neither the Protobuf config nor the checkpoint code (trainer/optimizer.h adds those), so
// the CUDA-only build's training check uses it too.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "models/params.h"

namespace moetron {

// The config's optimizer block holds the defaults (trainer/optimizer.h: adamw_settings).
struct AdamWSettings {
  float beta1, beta2, eps, weight_decay;
  float grad_clip;                  // the global norm to clip to; 0: no clipping
  bool decay_norms_and_embeddings;  // weight decay on every kind, not only matrices
};

class AdamW {
 public:
  // owned: [begin, end) element ranges of the flat buffers, ascending; empty = everything.
  // holds: the parameters it updates (empty: every trained one).
  AdamW(ParamTable& params, const AdamWSettings& cfg,
        std::vector<std::pair<int64_t, int64_t>> owned = {}, ParamFilter holds = {});
  // Clips the owned gradients to cfg.grad_clip given the global norm, then applies one AdamW
  // step to the owned parameters.
  void step(double lr, double grad_norm);
  int64_t steps() const { return step_; }

  // The state a checkpoint keeps: the ranges it updates, their first and second moments (range
  // after range), and the step count.
  const ParamFilter& holds() const { return holds_; }
  const std::vector<std::pair<int64_t, int64_t>>& owned() const { return owned_; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  void set_steps(int64_t steps) { step_ = steps; }

 private:
  ParamTable& params_;
  AdamWSettings cfg_;
  ParamFilter holds_;
  std::vector<std::pair<int64_t, int64_t>> owned_;
  Tensor m_, v_;  // moments of the owned elements, range after range
  int64_t step_ = 0;
};

}  // namespace moetron
