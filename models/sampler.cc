#include "models/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace moetron {

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature))
    throw Error(
        detail::concat("temperature ", options.temperature, " must be 0 (greedy) or positive"));
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f))
    throw Error(detail::concat("top-p ", options.top_p, " must be in (0, 1]"));
}

int32_t Sampler::argmax(std::span<const float> logits) {
  MOETRON_CHECK(!logits.empty(), "argmax of no logits");
  // max_element keeps the first of equal maxima: ties go to the lower id.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Distribution Sampler::distribution(std::span<const float> logits) const {
  Distribution p(logits.size(), 0.0);
  if (greedy()) {
    p[static_cast<size_t>(argmax(logits))] = 1.0;
    return p;
  }
  const double inv_t = 1.0 / static_cast<double>(options_.temperature);
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((static_cast<double>(logits[i]) - mx) * inv_t);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  if (options_.top_p >= 1.0f) return p;
  // The nucleus: most probable first (ties: lower id), until the mass reaches top_p.
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  double mass = 0.0;
  size_t kept = 0;
  while (kept < order.size() && mass < static_cast<double>(options_.top_p))
    mass += p[static_cast<size_t>(order[kept++])];
  for (size_t i = kept; i < order.size(); ++i) p[static_cast<size_t>(order[i])] = 0.0;
  for (double& x : p) x /= mass;
  return p;
}

double Sampler::uniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::draw(const Distribution& p) {
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  MOETRON_CHECK(total > 0.0, "draw from an empty distribution");
  const double u = uniform() * total;
  double cum = 0.0;
  int32_t last = -1;  // the last token of nonzero probability: u may pass rounding's total
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    cum += p[i];
    last = static_cast<int32_t>(i);
    if (u < cum) return last;
  }
  return last;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (greedy()) return argmax(logits);
  return draw(distribution(logits));
}

}  // namespace moetron
