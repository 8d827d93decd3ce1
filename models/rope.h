// Rotary position tables (docs/model.md): cos/sin [positions, head_dim / 2], shared by every
// attention layer of a model. Training makes them for the window length, the decoder for the
// longest sequence it may reach; row p is absolute position p either way.
#pragma once

#include <cstdint>

#include "core/ops.h"
#include "models/dims.h"

namespace moetron {

struct RopeTables {
  Tensor cos, sin;
  ops::RopeStyle style = ops::RopeStyle::rotate_half;
  static RopeTables make(const ModelDims& dims, int64_t positions, Device device = {});
};

}  // namespace moetron
