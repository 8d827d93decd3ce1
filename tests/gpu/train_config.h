// The GPU check's training spec of a run config (tests/gpu/train_check.h), for the builds that
// read configs: the reference writer and the test that keeps the committed files true.
#pragma once

#include <string>

#include "configs/moetron.pb.h"
#include "models/model_config.h"
#include "tests/gpu/train_check.h"
#include "trainer/lr_schedule.h"
#include "trainer/optimizer.h"
#include "trainer/plan.h"

namespace moetron::gpu {

// device_spec: the GPU (moetron plan's names) whose peak the benchmark's MFU is taken against,
// or empty.
inline TrainSpec train_spec(const config::RunConfig& cfg, int64_t steps,
                            const std::string& device_spec = {}) {
  TrainSpec spec;
  spec.dims = model_dims(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len());
  spec.adamw = adamw_settings(cfg.optimizer());
  spec.lr = cfg.optimizer().lr();
  spec.mtp_weight = mtp_loss_weight(cfg.schedule(), 0);
  spec.seed = cfg.seed();
  spec.init_std = cfg.model().init_std();
  spec.steps = steps;
  if (!device_spec.empty()) spec.peak_flops = moetron::device_spec(device_spec).peak_flops;
  return spec;
}

}  // namespace moetron::gpu
