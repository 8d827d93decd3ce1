#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moetron {

double learning_rate(const config::ScheduleConfig& s, double peak_lr, int64_t step) {
  const int64_t warmup = s.warmup_steps(), total = s.total_steps();
  if (step < warmup) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double min_lr = peak_lr * s.min_lr_ratio();
  switch (s.kind()) {
    case config::ScheduleConfig::CONSTANT:
      return peak_lr;
    case config::ScheduleConfig::WARMUP_STABLE_DECAY: {
      const auto decay_steps =
          std::max<int64_t>(1, static_cast<int64_t>(std::ceil(s.decay_fraction() * total)));
      const int64_t decay_start = std::max(warmup, total - decay_steps);
      if (step < decay_start) return peak_lr;
      const double progress = static_cast<double>(step - decay_start + 1) /
                              static_cast<double>(std::max<int64_t>(1, total - decay_start));
      return peak_lr + (min_lr - peak_lr) * std::min(1.0, progress);
    }
    case config::ScheduleConfig::COSINE:
    default: {
      const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
      const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
      return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }
  }
}

float mtp_loss_weight(const config::ScheduleConfig& s, int64_t step) {
  float weight = s.mtp_loss_weight();
  for (const auto& change : s.mtp_loss_weight_changes())
    if (step >= change.from_step()) weight = change.weight();
  return weight;
}

}  // namespace moetron
