// Learning-rate schedules and the MTP loss-weight schedule, as pure functions of the step.
#pragma once

#include <cstdint>

#include "configs/moetron.pb.h"

namespace moetron {

// Learning rate of optimizer step `step` (0-based).
double learning_rate(const config::ScheduleConfig& schedule, double peak_lr, int64_t step);
// MTP loss weight lambda in force at `step`.
float mtp_loss_weight(const config::ScheduleConfig& schedule, int64_t step);

}  // namespace moetron
