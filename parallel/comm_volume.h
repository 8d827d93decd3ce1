// The communication one training step needs, per group, from the model's shape and the layout:
// the formulas of docs/parallelism.md, in payload bytes per rank (what core/communicator.h
// counts), so a benchmark can put measured and expected side by side.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "models/dims.h"
#include "models/params.h"
#include "parallel/layout.h"

namespace moetron {

// Group name ("world", "dp", "tp", "ep", "edp") -> bytes per optimizer step.
// routed_off_rank: the share of routed rows an expert-parallel rank sends to experts on other
// ranks ((ep - 1) / ep when routing is balanced); the ep figure is then the mean over ranks.
std::map<std::string, double> expected_comm_bytes(const ModelDims& dims, const ParamTable& params,
                                                  const Layout& layout, int grad_accum_steps,
                                                  double routed_off_rank);

// The ep bytes of one rank in one step, exactly, from the rows its dispatches moved (summed over
// the step's micro-batches and MoE layers: MoeStepStats): per micro-batch and MoE layer the
// counts exchange, then each row sent off the rank and each row received from another rank
// crosses twice, to the experts and back, forward and backward.
double expected_ep_bytes(const ModelDims& dims, const Layout& layout, int grad_accum_steps,
                         int64_t rows_sent_off_rank, int64_t rows_received_off_rank);

}  // namespace moetron
