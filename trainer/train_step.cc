#include "trainer/train_step.h"

#include <cmath>

#include "core/ops.h"

namespace moetron {
namespace {

// Sums each MoE layer's loads and statistics over the group (their counts and sums add).
void reduce_moe(std::vector<MoeStepStats>& layers, Communicator* comm) {
  if (comm == nullptr || layers.empty()) return;
  const size_t experts = layers.front().counts.size();
  Tensor ints = Tensor::empty({static_cast<int64_t>(layers.size() * (experts + 2))}, DType::i64);
  Tensor sums = Tensor::empty({static_cast<int64_t>(layers.size() * 4)}, DType::f64);
  int64_t* i = ints.data<int64_t>();
  double* s = sums.data<double>();
  for (const MoeStepStats& m : layers) {
    i = std::copy(m.counts.begin(), m.counts.end(), i);
    *i++ = m.dropped;
    *i++ = m.micro_batches;
    for (double x : {m.entropy, m.seq_aux, m.aux, m.z}) *s++ = x;
  }
  comm->all_reduce(ints);
  comm->all_reduce(sums);
  i = ints.data<int64_t>();
  s = sums.data<double>();
  for (MoeStepStats& m : layers) {
    std::copy(i, i + experts, m.counts.begin());
    i += experts;
    m.dropped = *i++;
    m.micro_batches = *i++;
    for (double* x : {&m.entropy, &m.seq_aux, &m.aux, &m.z}) *x = *s++;
  }
}

}  // namespace

TrainStep::TrainStep(Model& model, const config::OptimizerConfig& optimizer,
                     const ProcessGroups& groups, int grad_accum_steps)
    : model_(model),
      groups_(groups),
      accum_(grad_accum_steps),
      sync_(model.params(), groups),
      optimizer_(model.params(), optimizer, sync_.owned()),
      tokens_(static_cast<size_t>(model.dims().batch * model.dims().window())) {}

double TrainStep::global_grad_norm() const {
  const Tensor& grads = model_.params().flat_grads();
  Tensor sum = Tensor::zeros({1}, DType::f64);
  for (const auto& [b, e] : sync_.norm_ranges())
    sum.data<double>()[0] += ops::sum_squares(grads.view(b, {e - b}));
  if (groups_.world()) groups_.world()->all_reduce(sum);
  return std::sqrt(sum.data<double>()[0]);
}

StepResult TrainStep::run(int64_t index, double lr, float mtp_weight, const NextBatch& next,
                          const std::function<void(const StepResult&)>& before_update) {
  const int dp = groups_.layout().dp;
  // Reductions are sums over dp ranks: each rank weighs its micro-batches by 1 / (accum * dp).
  const float grad_scale = 1.0f / static_cast<float>(accum_ * dp);
  ops::fill(model_.params().flat_grads(), 0.0f);
  model_.begin_step();
  StepResult r;
  const size_t depth = static_cast<size_t>(model_.dims().mtp_depth);
  Tensor losses = Tensor::zeros({static_cast<int64_t>(3 + depth)}, DType::f64);
  double* l = losses.data<double>();  // total, main, aux, mtp...
  for (int micro = 0; micro < accum_; ++micro) {
    next(tokens_);
    const bool last = micro + 1 == accum_;
    if (last) sync_.begin();
    const Losses m = model_.forward_backward(
        tokens_, mtp_weight, grad_scale,
        last ? Model::GradReadyHook([this](int unit) { sync_.unit_ready(unit); })
             : Model::GradReadyHook());
    l[0] += m.total * grad_scale;
    l[1] += m.main * grad_scale;
    l[2] += m.aux * grad_scale;
    for (size_t k = 0; k < depth; ++k) l[3 + k] += m.mtp[k] * grad_scale;
  }
  sync_.finish();
  r.exposed_comm_seconds = sync_.exposed_seconds();
  if (groups_.dp()) groups_.dp()->all_reduce(losses);
  r.losses.total = l[0];
  r.losses.main = l[1];
  r.losses.aux = l[2];
  r.losses.mtp.assign(l + 3, l + 3 + depth);
  r.moe = model_.moe_step_stats();
  reduce_moe(r.moe, groups_.dp());
  r.grad_norm = global_grad_norm();
  r.finite = std::isfinite(r.losses.total) && std::isfinite(r.grad_norm);
  if (before_update) before_update(r);
  if (!r.finite) return r;  // every rank decides alike: the norm and losses are global
  optimizer_.step(lr, r.grad_norm);
  sync_.gather_parameters();
  model_.update_router_biases(index, r.moe);
  return r;
}

}  // namespace moetron
