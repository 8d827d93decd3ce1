// The mapping of a moetron model onto Hugging Face's glm4_moe (GLM-4.5) layout: which tensors a
// checkpoint of the model holds, which tensors the export writes and where each comes from, and
// config.json. docs/export.md explains every choice; docs/model.md and docs/moe.md define the
// model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/model_tensors.h"
#include "checkpoint/safetensors.h"
#include "configs/moetron.pb.h"

namespace moetron::checkpoint {

// One tensor of the export and where its values come from.
struct ExportTensor {
  std::string name;    // in the safetensors files
  std::string source;  // the checkpoint tensor it copies
  std::vector<uint64_t> shape;
  StDtype dtype = StDtype::f32;
  // rows > 0: the rows are permuted within each block of `rope_rows` rows (one attention head)
  // from RoPE pairs (2j, 2j+1) to (j, j + rope_rows/2): moetron's INTERLEAVED RoPE as the
  // rotate_half RoPE that glm4_moe implements (docs/export.md).
  uint64_t rope_rows = 0;
};

// The tensors of the export, in order: the checkpoint's, plus for each MTP layer L+k the copies
// of the embedding and the head that vLLM and SGLang load (model.layers.{L+k}.embed_tokens,
// .shared_head.head), plus lm_head.weight copied from the embedding when the embeddings are tied.
// `dtype` applies to every tensor but the router's (mlp.gate.weight and
// e_score_correction_bias stay F32: routing is decided in fp32 by every engine).
std::vector<ExportTensor> export_tensors(const config::ModelConfig& m, StDtype dtype);

// Throws Error naming the first setting of `m` that glm4_moe cannot express and what would be
// valid.
void check_glm4_moe(const config::ModelConfig& m);

// config.json of the export. `run` is the checkpoint's resolved config (its data.seq_len is the
// context it was trained on); `step` the checkpoint's step, recorded under "moetron".
std::string glm4_moe_config_json(const config::RunConfig& run, StDtype dtype, int64_t step);

}  // namespace moetron::checkpoint
