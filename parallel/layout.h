// The parallel layout of a run: how many ranks do what (docs/parallelism.md).
#pragma once

#include <string>

#include "configs/moetron.pb.h"

namespace moetron {

struct Layout {
  int world = 1, dp = 1, tp = 1, ep = 1;
  bool zero1 = false, overlap_grad_reduce = true;

  int edp() const { return world / ep; }  // expert-data-parallel ranks
  // "dp 2 x tp 1 (ep 2, expert-dp 1), ZeRO-1 off"
  std::string describe() const;
};

// The layout of `cfg` (validated: validate_config checks what does not depend on the world) on
// `world` ranks; parallel.dp = 0 (the default) means world / tp. Throws CollectiveError naming
// the field, its value and the valid choices.
Layout resolve_layout(const config::RunConfig& cfg, int world);

// What a tensor-parallel layout changes about the model that the user should know (the padded
// vocabulary), or "".
std::string layout_notes(const config::RunConfig& cfg, const Layout& layout);

}  // namespace moetron
