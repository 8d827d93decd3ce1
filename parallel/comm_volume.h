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
// ranks ((ep - 1) / ep when routing is balanced).
std::map<std::string, double> expected_comm_bytes(const ModelDims& dims, const ParamTable& params,
                                                  const Layout& layout, int grad_accum_steps,
                                                  double routed_off_rank);

}  // namespace moetron
