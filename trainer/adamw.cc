#include "trainer/adamw.h"

#include <algorithm>

#include "core/ops.h"

namespace moetron {

namespace {

// The parts of `owned` that lie in parameters `holds` accepts, ascending and merged.
std::vector<std::pair<int64_t, int64_t>> held_ranges(
    const ParamTable& params, const std::vector<std::pair<int64_t, int64_t>>& owned,
    const ParamFilter& holds) {
  std::vector<const ParamInfo*> held;
  for (const ParamInfo& p : params.infos())
    if (p.kind != ParamKind::buffer && holds(p.name, p.kind)) held.push_back(&p);
  std::sort(held.begin(), held.end(),
            [](const ParamInfo* a, const ParamInfo* b) { return a->offset < b->offset; });
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& [b, e] : owned)
    for (const ParamInfo* p : held) {
      const int64_t lo = std::max(b, p->offset), hi = std::min(e, p->offset + p->numel());
      if (lo >= hi) continue;
      if (!out.empty() && out.back().second == lo)
        out.back().second = hi;
      else
        out.emplace_back(lo, hi);
    }
  return out;
}

}  // namespace

AdamW::AdamW(ParamTable& params, const AdamWSettings& cfg,
             std::vector<std::pair<int64_t, int64_t>> owned, ParamFilter holds)
    : params_(params), cfg_(cfg), holds_(std::move(holds)), owned_(std::move(owned)) {
  if (owned_.empty()) owned_.emplace_back(0, params.numel());
  if (holds_)
    owned_ = held_ranges(params, owned_, holds_);
  else
    holds_ = [](const std::string&, ParamKind) { return true; };
  int64_t n = 0;
  for (const auto& [b, e] : owned_) n += e - b;
  // The moments live where the parameters do.
  const Device device = params.flat_values().device();
  m_ = Tensor::zeros({n}, DType::f32, device);
  v_ = Tensor::zeros({n}, DType::f32, device);
}

void AdamW::step(double lr, double grad_norm) {
  Tensor& grads = params_.flat_grads();
  if (cfg_.grad_clip > 0.0f) {
    // torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
    const double coef = cfg_.grad_clip / (grad_norm + 1e-6);
    if (coef < 1.0)
      for (const auto& [b, e] : owned_) {
        Tensor g = grads.view(b, {e - b});
        ops::scale(g, static_cast<float>(coef));
      }
  }
  ++step_;
  int64_t moment = 0;  // where the current range's moments start
  for (const auto& [b, e] : owned_) {
    for (const ParamInfo& p : params_.infos()) {
      const int64_t pb = std::max(b, p.offset), pe = std::min(e, p.offset + p.numel());
      if (pb >= pe || p.kind == ParamKind::buffer) continue;  // buffers: state, not trained
      const bool decays = p.kind == ParamKind::matrix || cfg_.decay_norms_and_embeddings;
      const ops::AdamWStep s{static_cast<float>(lr),
                             cfg_.beta1,
                             cfg_.beta2,
                             cfg_.eps,
                             decays ? cfg_.weight_decay : 0.0f,
                             step_};
      const int64_t n = pe - pb;
      Tensor value = params_.flat_values().view(pb, {n});
      Tensor m = m_.view(moment + pb - b, {n}), v = v_.view(moment + pb - b, {n});
      ops::adamw(value, grads.view(pb, {n}), m, v, s);
    }
    moment += e - b;
  }
}

}  // namespace moetron
