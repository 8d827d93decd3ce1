#include "trainer/optimizer.h"

namespace moetron {

AdamWSettings adamw_settings(const config::OptimizerConfig& cfg) {
  return {cfg.beta1(),        cfg.beta2(),     cfg.eps(),
          cfg.weight_decay(), cfg.grad_clip(), cfg.decay_norms_and_embeddings()};
}

std::vector<checkpoint::StateSlot> adamw_slots(const AdamW& adamw) {
  return {{"exp_avg", adamw.holds(), adamw.owned(), adamw.exp_avg()},
          {"exp_avg_sq", adamw.holds(), adamw.owned(), adamw.exp_avg_sq()}};
}

Optimizer::Optimizer(ParamTable& params, const config::OptimizerConfig& cfg,
                     std::vector<std::pair<int64_t, int64_t>> owned, Muon::Groups muon_groups)
    : adamw_(params, adamw_settings(cfg), std::move(owned),
             cfg.kind() == config::OptimizerConfig::MUON
                 ? ParamFilter([](const std::string& name, ParamKind kind) {
                     return !is_hidden_matrix(name, kind);
                   })
                 : ParamFilter()) {
  if (cfg.kind() == config::OptimizerConfig::MUON)
    muon_ = std::make_unique<Muon>(params, cfg, is_hidden_matrix, muon_groups);
}

void Optimizer::step(double lr, double grad_norm) {
  adamw_.step(lr, grad_norm);
  if (muon_) muon_->step(lr, grad_norm);
}

checkpoint::OptimizerState Optimizer::state() const {
  checkpoint::OptimizerState s{adamw_slots(adamw_), adamw_.steps()};
  if (muon_) s.slots.push_back(muon_->slot());
  return s;
}

}  // namespace moetron
