// The Hugging Face architectures `moetron export` writes, as mappings of the checkpoint's
// tensors (checkpoint/model_tensors.h, the parameter table's names and shapes) onto one
// architecture's files: an architecture says what it can express, how a tensor's rows are
// laid out, its config.json and the notes worth telling the user. The tensor list itself is
// shared (export_tensors). Adding an architecture is one HfLayout; docs/export.md explains the
// choices of each.
#pragma once

#include <cstdint>
#include <memory>
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
  // Checkpoint tensors whose rows follow source's, in order (a fused tensor: Qwen3.5's
  // in_proj_qkv of in_proj_q, _k, _v).
  std::vector<std::string> more_sources;
};

class HfLayout {
 public:
  virtual ~HfLayout() = default;
  virtual std::string model_type() const = 0;  // config.json's, e.g. "deepseek_v3"
  // Throws Error naming the first setting of `m` the architecture cannot express and what
  // would be valid.
  virtual void check(const config::ModelConfig& m) const = 0;
  // The rows per head of `tensor` to permute (ExportTensor::rope_rows); 0: copied as stored.
  virtual uint64_t rope_rows(const config::ModelConfig& m, const std::string& tensor) const = 0;
  // config.json. `run` is the checkpoint's resolved config (its data.seq_len is the context it
  // was trained on); `step` the checkpoint's step, recorded under "moetron".
  virtual std::string config_json(const config::RunConfig& run, StDtype dtype,
                                  int64_t step) const = 0;
  virtual std::vector<std::string> notes(const config::ModelConfig& m) const = 0;
  // The architecture's names for the export's tensors (export_tensors' list, the checkpoint's
  // names): renamed, fused or dropped in place; kept as they are by default.
  virtual void adapt(const config::ModelConfig& /*m*/,
                     std::vector<ExportTensor>& /*tensors*/) const {}
};

// deepseek_v3 for a model with MLA layers, qwen3_5_moe_text for one with Gated DeltaNet layers,
// glm4_moe for one of attention layers; Error for a model that mixes MLA with another mixer
// (no Hugging Face architecture has both).
std::unique_ptr<HfLayout> hf_layout_for(const config::ModelConfig& m);
std::unique_ptr<HfLayout> glm4_moe_layout();
std::unique_ptr<HfLayout> deepseek_v3_layout();
std::unique_ptr<HfLayout> qwen3_5_moe_layout();
// Throws Error naming the first of Qwen3-Next's options (gated attention, q/k norms, partial
// RoPE, head_dim, zero-centred norms, the shared-expert gate) that `m` uses, which the
// DeepSeek-style architectures (glm4_moe, deepseek_v3) do not have.
void check_no_qwen_options(const config::ModelConfig& m, const std::string& model_type);

// The tensors of the export, in order: the checkpoint's, plus for each MTP layer L+k the copies
// of the embedding and the head that vLLM and SGLang load (model.layers.{L+k}.embed_tokens,
// .shared_head.head), plus lm_head.weight copied from the embedding when the embeddings are tied.
// `dtype` applies to every tensor but the router's (mlp.gate.weight and
// e_score_correction_bias stay F32: routing is decided in fp32 by every engine).
std::vector<ExportTensor> export_tensors(const config::ModelConfig& m, const HfLayout& layout,
                                         StDtype dtype);

// Shared by the layouts' config.json: the shortest text that reads back as the same float,
// always with a fraction or exponent (transformers' strict config types reject an int there).
std::string json_float(float v);
// The checks every MoE architecture of Hugging Face's (sigmoid routing, >= 2 experts a group).
void check_hf_moe(const config::ModelConfig& m, const std::string& model_type);
// config.json's MoE and MTP fields, the same in every architecture ("n_routed_experts" ..
// "num_nextn_predict_layers", each line ending ",\n"), and its closing fields (no special
// tokens, use_cache, dtype, moetron's provenance: the step, `rope_note`, capacity_factor; then
// the closing brace).
std::string hf_moe_fields(const config::ModelConfig& m);
std::string hf_closing_fields(const config::ModelConfig& m, StDtype dtype, int64_t step,
                              const std::string& rope_note);
// The notes of settings every architecture drops or copies (tied head, capacity, no shared
// expert).
std::vector<std::string> common_notes(const config::ModelConfig& m, const std::string& model_type);

}  // namespace moetron::checkpoint
