// The glm4_moe (GLM-4.5) layout: a model of attention layers (GQA, RoPE over the whole head)
// with the DeepSeek-V3 MoE and MTP layers. docs/export.md explains every choice.
#include <sstream>

#include "checkpoint/hf_layout.h"
#include "configs/config.h"
#include "core/check.h"

namespace moetron::checkpoint {
namespace {

using moetron::head_dim;
using moetron::kv_heads;

using config::ModelConfig;
using detail::concat;

class Glm4Moe final : public HfLayout {
 public:
  std::string model_type() const override { return "glm4_moe"; }

  void check(const ModelConfig& m) const override {
    check_hf_moe(m, model_type());
    check_no_qwen_options(m, model_type());
    if (m.hidden_size() % m.num_attention_heads() != 0 || head_dim(m) % 2 != 0)
      throw Error(concat("model.hidden_size / model.num_attention_heads = ", m.hidden_size(), " / ",
                         m.num_attention_heads(), " must be an even head_dim for RoPE"));
    if (m.rope_scaling().factor() != 1.0f)
      throw Error(concat("model.rope_scaling.factor is ", m.rope_scaling().factor(),
                         ": the glm4_moe export writes unscaled RoPE only (factor 1)"));
  }

  // glm4_moe rotates halves: INTERLEAVED q/k rows are permuted within each head.
  uint64_t rope_rows(const ModelConfig& m, const std::string& tensor) const override {
    const bool qk = tensor.ends_with(".self_attn.q_proj.weight") ||
                    tensor.ends_with(".self_attn.k_proj.weight");
    return m.rope_style() == ModelConfig::INTERLEAVED && qk ? static_cast<uint64_t>(head_dim(m))
                                                            : 0;
  }

  std::vector<std::string> notes(const ModelConfig& m) const override {
    std::vector<std::string> notes = common_notes(m, model_type());
    if (m.rope_style() == ModelConfig::INTERLEAVED)
      notes.insert(notes.begin(),
                   "rope_style INTERLEAVED: q_proj/k_proj rows permuted within each head to the "
                   "rotate_half layout glm4_moe implements (the same function)");
    return notes;
  }

  std::string config_json(const config::RunConfig& run, StDtype dtype,
                          int64_t step) const override {
    const ModelConfig& m = run.model();
    const std::string theta = json_float(m.rope_theta());
    std::ostringstream j;
    j << "{\n"
      << "  \"architectures\": [\"Glm4MoeForCausalLM\"],\n"
      << "  \"model_type\": \"glm4_moe\",\n"
      << "  \"vocab_size\": " << m.vocab_size() << ",\n"
      << "  \"hidden_size\": " << m.hidden_size() << ",\n"
      << "  \"intermediate_size\": " << m.intermediate_size() << ",\n"
      << "  \"num_hidden_layers\": " << m.num_hidden_layers() << ",\n"
      << "  \"num_attention_heads\": " << m.num_attention_heads() << ",\n"
      << "  \"num_key_value_heads\": " << kv_heads(m) << ",\n"
      << "  \"head_dim\": " << head_dim(m) << ",\n"
      << "  \"hidden_act\": \"silu\",\n"
      << "  \"attention_bias\": false,\n"
      << "  \"attention_dropout\": 0.0,\n"
      << "  \"use_qk_norm\": false,\n"
      << "  \"rms_norm_eps\": " << json_float(m.rms_norm_eps())
      << ",\n"
      // moetron rotates the whole head (glm4_moe's default would be half of it); both spellings,
      // for transformers 5 (rope_parameters) and readers of the older top-level fields.
      << "  \"rope_theta\": " << theta << ",\n"
      << "  \"partial_rotary_factor\": 1.0,\n"
      << "  \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": " << theta
      << ", \"partial_rotary_factor\": 1.0},\n"
      << "  \"max_position_embeddings\": " << run.data().seq_len() << ",\n"
      << "  \"initializer_range\": " << json_float(m.init_std())
      << ",\n"
      // Tied embeddings are exported as an untied copy (lm_head.weight): vLLM's
      // Glm4MoeForCausalLM always loads lm_head.weight.
      << "  \"tie_word_embeddings\": false,\n"
      << hf_moe_fields(m)
      << hf_closing_fields(m, dtype, step,
                           m.rope_style() == ModelConfig::INTERLEAVED
                               ? "INTERLEAVED (q_proj/k_proj rows permuted to rotate_half)"
                               : "ROTATE_HALF");
    return j.str();
  }
};

}  // namespace

std::unique_ptr<HfLayout> glm4_moe_layout() {
  return std::make_unique<Glm4Moe>();
}

}  // namespace moetron::checkpoint
