// The tensors a checkpoint of a model holds under /params (the parameters and the router
// biases, under their Hugging Face names and logical shapes), as the model config describes them
// (docs/model.md, docs/moe.md), and how many and how large they are, in closed form, so a config
// read from a file can be weighed against the file before anything of that size is built.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "configs/moetron.pb.h"

namespace moetron::checkpoint {

struct ModelTensor {
  std::string name;
  std::vector<uint64_t> shape;
};

// Every tensor, in export order: the embedding, layers 0 .. L+D-1 (the MTP modules are layers
// L .. L+D-1), the final norm, the head.
std::vector<ModelTensor> model_tensors(const config::ModelConfig& m);

// The number of tensors model_tensors(m) lists and their elements, computed without listing
// them (saturating at UINT64_MAX, so any config gives an answer).
struct ModelSize {
  uint64_t tensors = 0, elements = 0;
};
ModelSize model_size(const config::ModelConfig& m);

}  // namespace moetron::checkpoint
