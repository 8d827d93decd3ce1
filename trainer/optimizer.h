// The optimizers (docs/optimizers.md). `Optimizer` is a run's: AdamW (trainer/adamw.h) for every
// parameter (optimizer.kind ADAMW), or Muon for the hidden matrices and AdamW for the rest
// (MUON); each owns its state, which checkpoints store by slot name.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "configs/moetron.pb.h"
#include "models/params.h"
#include "trainer/adamw.h"
#include "trainer/muon.h"

namespace moetron {

// AdamW's settings from the config's optimizer block.
AdamWSettings adamw_settings(const config::OptimizerConfig& cfg);
// AdamW's moments as checkpoint slots (/exp_avg, /exp_avg_sq).
std::vector<checkpoint::StateSlot> adamw_slots(const AdamW& adamw);

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
