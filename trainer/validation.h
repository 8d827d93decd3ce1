// The validation pass: what `moetron train` reports every logging.val_interval steps and
// `moetron eval` reports for any checkpoint (docs/runs.md), the same code for both, so the two
// give the same numbers at the same step.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "configs/moetron.pb.h"
#include "data/loader.h"
#include "models/model.h"
#include "parallel/process_groups.h"

namespace moetron {

// The validation micro-batches of an evaluation, over all data-parallel ranks:
// logging.val_sequences windows (the first of the split's fixed draw, whatever the layout) in
// micro-batches of data.micro_batch_size, or the legacy logging.val_batches. Throws Error when
// val_sequences does not split into whole rounds of dp micro-batches (other layouts would then
// see other windows), naming the nearest valid counts.
int64_t validation_batches(const config::RunConfig& cfg, int dp);

// The mean losses of `batches` micro-batches of `model`'s shape from `split`: the windows one
// rank alone would draw with the run's validation seed (from cfg.seed()), shared out over the
// data-parallel ranks, the MTP modules' weighted by `mtp_weight` in the total. `stop` is asked
// before each round (every rank agrees on it); nullopt when it said stop.
std::optional<Losses> validate(Model& model, const ProcessGroups& groups,
                               const data::Dataset& split, const config::RunConfig& cfg,
                               int64_t batches, float mtp_weight,
                               const std::function<bool()>& stop);

}  // namespace moetron
