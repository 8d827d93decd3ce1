// One optimizer step, the same for the trainer, the benchmark and the tests (llm.c's
// gpt2_backward/gpt2_update split, Megatron's finalize_model_grads): zero the gradients; run
// the micro-batches (the last one's backward hands each finished unit to the gradient sync);
// wait for the reductions; reduce the losses and expert loads over the data-parallel group;
// the global gradient norm; stop before any update if it or the loss is not finite; clip and
// the optimizer (AdamW on the elements this rank owns; Muon on its matrices); ZeRO-1 gather;
// router-bias update. The losses and the norm stay on the device until one read per step
// (docs/architecture.md, device scalars).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/model.h"
#include "parallel/grad_sync.h"
#include "parallel/process_groups.h"
#include "trainer/optimizer.h"

namespace moetron {

struct StepResult {
  Losses losses;                  // means over the global batch (all micro-batches of all dp ranks)
  double grad_norm = 0.0;         // global, before clipping
  bool finite = true;             // false: loss or gradient norm not finite, nothing was updated
  std::vector<MoeStepStats> moe;  // expert loads and balance statistics, summed over dp ranks
  double exposed_comm_seconds = 0.0;  // waiting for gradient reductions after backward
  // QK-clip (optimizer.muon.qk_clip_tau > 0): the step's largest pre-softmax logit over every
  // head, and how many heads it rescaled.
  double max_logit = 0.0;
  int64_t clipped_heads = 0;
};

class TrainStep {
 public:
  TrainStep(Model& model, const config::OptimizerConfig& optimizer, const ProcessGroups& groups,
            int grad_accum_steps);

  // Fills one micro-batch: [batch, window] token ids.
  using NextBatch = std::function<void(std::span<int32_t>)>;
  // Step `index` (0-based) with learning rate `lr` and MTP weight `mtp_weight`. before_update,
  // when given, sees the reduced gradients before clipping and the update (tests use it).
  StepResult run(int64_t index, double lr, float mtp_weight, const NextBatch& next,
                 const std::function<void(const StepResult&)>& before_update = {});
  Optimizer& optimizer() { return optimizer_; }
  // Whether gradient reductions start during backward (benchmarks compare both).
  void set_overlap(bool overlap) { sync_.set_overlap(overlap); }

 private:
  // Adds the squared global gradient norm (before clipping) into sum ([1] f64 on the device).
  void grad_norm_squared(Tensor& sum) const;
  // QK-clip after the update: each head's largest logit of the step, reduced (max) over the
  // data-parallel group, and the heads above tau rescaled.
  void qk_clip(float tau, StepResult& r);

  Model& model_;
  const ProcessGroups& groups_;
  int accum_;
  GradSync sync_;
  Optimizer optimizer_;
  float qk_clip_tau_;
  std::vector<int32_t> tokens_;
};

}  // namespace moetron
