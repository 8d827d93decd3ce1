#include "trainer/train_step.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"

namespace moetron {
namespace {

// Sums each MoE layer's loads over the group (the balance sums were reduced with the losses).
// These counts are host values already: the dispatch read them.
void reduce_moe(std::vector<MoeStepStats>& layers, Communicator* comm) {
  if (comm == nullptr || layers.empty()) return;
  const size_t experts = layers.front().counts.size();
  Tensor ints = Tensor::empty({static_cast<int64_t>(layers.size() * (experts + 2))}, DType::i64);
  int64_t* i = ints.data<int64_t>();
  for (const MoeStepStats& m : layers) {
    i = std::copy(m.counts.begin(), m.counts.end(), i);
    *i++ = m.dropped;
    *i++ = m.micro_batches;
  }
  comm->all_reduce(ints);
  i = ints.data<int64_t>();
  for (MoeStepStats& m : layers) {
    std::copy(i, i + experts, m.counts.begin());
    i += experts;
    m.dropped = *i++;
    m.micro_batches = *i++;
  }
}

}  // namespace

TrainStep::TrainStep(Model& model, const config::OptimizerConfig& optimizer,
                     const ProcessGroups& groups, int grad_accum_steps)
    : model_(model),
      groups_(groups),
      accum_(grad_accum_steps),
      sync_(model.params(), groups),
      optimizer_(model.params(), optimizer, sync_.owned(),
                 {groups.tp(), groups.layout().tp, groups.tp_rank(), groups.dp(), groups.edp()}),
      qk_clip_tau_(optimizer.kind() == config::OptimizerConfig::MUON
                       ? optimizer.muon().qk_clip_tau()
                       : 0.0f),
      tokens_(static_cast<size_t>(model.dims().batch * model.dims().window())) {}

void TrainStep::grad_norm_squared(Tensor& sum) const {
  const Tensor& grads = model_.params().flat_grads();
  for (const auto& [b, e] : sync_.norm_ranges()) ops::sum_squares(grads.view(b, {e - b}), sum);
  if (groups_.world()) groups_.world()->all_reduce(sum);
}

void TrainStep::qk_clip(float tau, StepResult& r) {
  // Every mixer's largest logits in one tensor: one reduction and one read per step.
  const std::vector<TokenMixer*> mixers = model_.mixers();
  int64_t heads = 0;
  for (TokenMixer* m : mixers) heads += m->max_logits().numel();
  Tensor all = model_.runtime().empty({heads});
  int64_t at = 0;
  for (TokenMixer* m : mixers) {
    Tensor part = all.view(at, {m->max_logits().numel()});
    ops::copy(m->max_logits(), part);
    at += part.numel();
  }
  if (groups_.dp()) groups_.dp()->all_reduce(all, ReduceOp::max);
  const std::vector<float> host = ops::to_host<float>(all);
  r.max_logit = host.empty() ? 0.0 : *std::max_element(host.begin(), host.end());
  at = 0;
  for (TokenMixer* m : mixers) {
    const int64_t n = m->max_logits().numel();
    std::vector<float> gamma(static_cast<size_t>(n), 1.0f);
    bool any = false;
    for (int64_t h = 0; h < n; ++h) {
      const float s = host[static_cast<size_t>(at + h)];
      if (s > tau) {
        gamma[static_cast<size_t>(h)] = tau / s;
        any = true;
        ++r.clipped_heads;
      }
    }
    if (any) m->qk_clip(gamma);
    at += n;
  }
}

StepResult TrainStep::run(int64_t index, double lr, float mtp_weight, const NextBatch& next,
                          const std::function<void(const StepResult&)>& before_update) {
  const int dp = groups_.layout().dp;
  // Reductions are sums over dp ranks: each rank weighs its micro-batches by 1 / (accum * dp).
  const float grad_scale = 1.0f / static_cast<float>(accum_ * dp);
  ops::fill(model_.params().flat_grads(), 0.0f);
  model_.begin_step();
  StepResult r;
  // The step's scalars on the device: the model's sums, then the squared gradient norm. The
  // host reads them once, below.
  const int64_t n_sums = model_.sums_size();
  Tensor scalars = Tensor::zeros({n_sums + 1}, DType::f64, model_.runtime().device);
  Tensor sums = scalars.view(0, {n_sums}), norm_squared = scalars.view(n_sums, {1});
  for (int micro = 0; micro < accum_; ++micro) {
    next(tokens_);
    const bool last = micro + 1 == accum_;
    if (last) sync_.begin();
    model_.forward_backward(tokens_, mtp_weight, grad_scale, sums,
                            last
                                ? Model::GradReadyHook([this](int unit) { sync_.unit_ready(unit); })
                                : Model::GradReadyHook());
  }
  sync_.finish();
  r.exposed_comm_seconds = sync_.exposed_seconds();
  if (groups_.dp()) groups_.dp()->all_reduce(sums);
  grad_norm_squared(norm_squared);
  const std::vector<double> host = ops::to_host<double>(scalars);
  const std::span<const double> host_sums = std::span(host).first(static_cast<size_t>(n_sums));
  r.losses = model_.losses(host_sums, int64_t{accum_} * dp, mtp_weight);
  r.moe = model_.moe_step_stats(host_sums);
  reduce_moe(r.moe, groups_.dp());
  r.grad_norm = std::sqrt(host.back());
  r.finite = std::isfinite(r.losses.total) && std::isfinite(r.grad_norm);
  if (before_update) before_update(r);
  if (!r.finite) return r;  // every rank decides alike: the norm and losses are global
  // Muon's owners need whole gradients: under ZeRO-1 the reduced parts are gathered first (the
  // parameter gather below then leaves every rank with the values the owners broadcast).
  if (optimizer_.muon()) sync_.gather_gradients();
  optimizer_.step(lr, r.grad_norm);
  sync_.gather_parameters();
  if (qk_clip_tau_ > 0.0f) qk_clip(qk_clip_tau_, r);
  model_.update_router_biases(index, r.moe);
  return r;
}

}  // namespace moetron
