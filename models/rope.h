// Rotary position tables (docs/model.md): cos/sin [positions, rope_dim / 2], shared by every
// attention layer of a model. Training makes them for the window length, the decoder for the
// longest sequence it may reach; row p is absolute position p either way. With YaRN the
// frequencies and an attention factor on cos/sin follow Hugging Face's
// _compute_yarn_parameters.
#pragma once

#include <cstdint>
#include <vector>

#include "core/ops.h"
#include "models/dims.h"

namespace moetron {

// The rotation frequencies inv_freq[j], j < rope_dim / 2, computed in fp32 as Hugging Face does.
std::vector<float> rope_inv_freq(const ModelDims& dims);
// YaRN's factor on cos/sin (1 without scaling).
float rope_attention_factor(const YarnDims& yarn);
// The factor on MLA's softmax scale: mscale(factor, mscale_all_dim)^2 (1 without scaling), as
// DeepSeek-V3 and Hugging Face's DeepseekV3Attention apply it.
float yarn_softmax_factor(const YarnDims& yarn);

struct RopeTables {
  Tensor cos, sin;
  ops::RopeStyle style = ops::RopeStyle::rotate_half;
  static RopeTables make(const ModelDims& dims, int64_t positions, Device device = {});
};

}  // namespace moetron
