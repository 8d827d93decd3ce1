// What models/ takes from the Protobuf run config: the model's sizes and the GEMM dtype. The
// layers themselves (library moetron_layers) never see the config, so the CUDA-only build,
// which has no Protobuf, builds them too.
#pragma once

#include <cstdint>

#include "configs/moetron.pb.h"
#include "core/tensor.h"
#include "models/dims.h"

namespace moetron {

// The sizes of `cfg` at this micro-batch shape.
ModelDims model_dims(const config::ModelConfig& cfg, int64_t batch, int64_t seq);

// The GEMM operands' dtype of a run's precision.
inline DType compute_dtype(config::RunConfig::Precision precision) {
  return precision == config::RunConfig::BF16 ? DType::bf16 : DType::f32;
}

}  // namespace moetron
