// The sizes every layer is built from, derived once from the model config and the batch shape.
#pragma once

#include <cstdint>

#include "configs/moetron.pb.h"
#include "core/ops.h"

namespace moetron {

struct ModelDims {
  int64_t batch = 1, seq = 1;  // micro-batch shape; rows = batch * seq
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int64_t layers = 0, mtp_depth = 0;
  float eps = 1e-6f, rope_theta = 10000.0f;
  ops::RopeStyle rope_style = ops::RopeStyle::rotate_half;
  bool tied_head = false;

  int64_t rows() const { return batch * seq; }
  // Tokens one sample draws: T inputs, their next tokens, and D more for the MTP modules.
  int64_t window() const { return seq + 1 + mtp_depth; }
};

ModelDims model_dims(const config::ModelConfig& cfg, int64_t batch, int64_t seq);

}  // namespace moetron
