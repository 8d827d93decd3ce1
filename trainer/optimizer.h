// The optimizers (docs/optimizers.md). AdamW over element ranges of the parameter table, with
// global-norm gradient clipping (torch semantics): it updates the ranges it is given (all of
// them, or under ZeRO-1 this rank's part) of the parameters it holds and keeps moments for those
// alone. `Optimizer` is a run's: AdamW for every parameter (optimizer.kind ADAMW), or Muon for
// the hidden matrices and AdamW for the rest (MUON); each owns its state, which checkpoints
// store by slot name.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "configs/moetron.pb.h"
#include "models/params.h"
#include "trainer/muon.h"

namespace moetron {

class AdamW {
 public:
  // owned: [begin, end) element ranges of the flat buffers, ascending; empty = everything.
  // holds: the parameters it updates (empty: every trained one).
  AdamW(ParamTable& params, const config::OptimizerConfig& cfg,
        std::vector<std::pair<int64_t, int64_t>> owned = {}, ParamFilter holds = {});
  // Clips the owned gradients to cfg.grad_clip given the global norm, then applies one AdamW
  // step to the owned parameters.
  void step(double lr, double grad_norm);
  int64_t steps() const { return step_; }

  // The state a checkpoint keeps: the ranges it updates, their first and second moments (range
  // after range), and the step count.
  const std::vector<std::pair<int64_t, int64_t>>& owned() const { return owned_; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  void set_steps(int64_t steps) { step_ = steps; }
  // The moments as checkpoint slots (/exp_avg, /exp_avg_sq).
  std::vector<checkpoint::StateSlot> slots() const;

 private:
  ParamTable& params_;
  config::OptimizerConfig cfg_;
  ParamFilter holds_;
  std::vector<std::pair<int64_t, int64_t>> owned_;
  Tensor m_, v_;  // moments of the owned elements, range after range
  int64_t step_ = 0;
};

class Optimizer {
 public:
  // owned: as AdamW's; muon_groups: the groups Muon works over (Muon::Groups).
  Optimizer(ParamTable& params, const config::OptimizerConfig& cfg,
            std::vector<std::pair<int64_t, int64_t>> owned, Muon::Groups muon_groups = {});
  void step(double lr, double grad_norm);
  int64_t steps() const { return adamw_.steps(); }
  void set_steps(int64_t steps) { adamw_.set_steps(steps); }
  AdamW& adamw() { return adamw_; }
  Muon* muon() { return muon_.get(); }
  // Every slot of state (AdamW's moments, Muon's momentum) and the step count.
  checkpoint::OptimizerState state() const;

 private:
  AdamW adamw_;
  std::unique_ptr<Muon> muon_;  // optimizer.kind MUON only
};

}  // namespace moetron
