// The deepseek_v3 (DeepseekV3ForCausalLM) layout: MLA layers with the DeepSeek-V3 MoE and MTP
// layers (at index num_hidden_layers + k, as DeepSeek-V3's release holds them). moetron's
// parameter names are this architecture's, so every tensor is copied as stored; the RoPE
// layout is stated, not permuted: rope_interleave true for INTERLEAVED (pairs (2i, 2i+1),
// DeepSeek's own order, which transformers de-interleaves at run time), false for ROTATE_HALF.
// docs/export.md explains every choice.
#include <cmath>
#include <sstream>

#include "checkpoint/hf_layout.h"
#include "core/check.h"

namespace moetron::checkpoint {
namespace {

using config::ModelConfig;
using detail::concat;

const char* json_bool(bool v) {
  return v ? "true" : "false";
}

// max_position_embeddings: YaRN's factor x the original context (transformers 4.51 to 4.55
// derive the factor from that ratio), else the trained context.
int64_t max_positions(const config::RunConfig& run) {
  const config::RopeScalingConfig& r = run.model().rope_scaling();
  if (r.factor() == 1.0f) return run.data().seq_len();
  return std::llround(static_cast<double>(r.factor()) * r.original_max_position_embeddings());
}

class DeepseekV3 final : public HfLayout {
 public:
  std::string model_type() const override { return "deepseek_v3"; }

  void check(const ModelConfig& m) const override {
    check_hf_moe(m, model_type());
    check_no_qwen_options(m, model_type());
    const config::RopeScalingConfig& r = m.rope_scaling();
    const double positions = static_cast<double>(r.factor()) * r.original_max_position_embeddings();
    if (r.factor() != 1.0f && positions != std::round(positions))
      throw Error(concat("model.rope_scaling.factor ", r.factor(), " x original_max_position_",
                         "embeddings ", r.original_max_position_embeddings(), " = ", positions,
                         " is not a whole number of positions: deepseek_v3's "
                         "max_position_embeddings is that product (some transformers versions "
                         "derive the factor from it); choose a factor that gives a whole number"));
  }

  uint64_t rope_rows(const ModelConfig&, const std::string&) const override { return 0; }

  std::vector<std::string> notes(const ModelConfig& m) const override {
    std::vector<std::string> notes = common_notes(m, model_type());
    notes.insert(notes.begin(),
                 m.rope_style() == ModelConfig::INTERLEAVED
                     ? "rope_style INTERLEAVED: rope_interleave true (DeepSeek's pair order, "
                       "copied as stored)"
                     : "rope_style ROTATE_HALF: rope_interleave false (copied as stored)");
    if (m.mla().q_lora_rank() == 0)
      notes.push_back("q_lora_rank 0: q_lora_rank null (q_proj), as DeepSeek-V2-Lite");
    return notes;
  }

  std::string config_json(const config::RunConfig& run, StDtype dtype,
                          int64_t step) const override {
    const ModelConfig& m = run.model();
    const config::MlaConfig& a = m.mla();
    const config::RopeScalingConfig& r = m.rope_scaling();
    const std::string theta = json_float(m.rope_theta());
    // The YaRN fields, for rope_scaling (transformers 4) and rope_parameters (5).
    std::string yarn;
    if (r.factor() != 1.0f)
      yarn = concat(
          ", \"factor\": ", json_float(r.factor()),
          ", \"original_max_position_embeddings\": ", r.original_max_position_embeddings(),
          ", \"beta_fast\": ", json_float(r.beta_fast()),
          ", \"beta_slow\": ", json_float(r.beta_slow()), ", \"mscale\": ", json_float(r.mscale()),
          ", \"mscale_all_dim\": ", json_float(r.mscale_all_dim()));
    const std::string rope_type = r.factor() != 1.0f ? "yarn" : "default";
    std::ostringstream j;
    j << "{\n"
      << "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
      << "  \"model_type\": \"deepseek_v3\",\n"
      << "  \"vocab_size\": " << m.vocab_size() << ",\n"
      << "  \"hidden_size\": " << m.hidden_size() << ",\n"
      << "  \"intermediate_size\": " << m.intermediate_size() << ",\n"
      << "  \"num_hidden_layers\": " << m.num_hidden_layers() << ",\n"
      << "  \"num_attention_heads\": " << m.num_attention_heads() << ",\n"
      << "  \"num_key_value_heads\": " << m.num_attention_heads() << ",\n"
      << "  \"q_lora_rank\": " << (a.q_lora_rank() > 0 ? std::to_string(a.q_lora_rank()) : "null")
      << ",\n"
      << "  \"kv_lora_rank\": " << a.kv_lora_rank() << ",\n"
      << "  \"qk_nope_head_dim\": " << a.qk_nope_head_dim() << ",\n"
      << "  \"qk_rope_head_dim\": " << a.qk_rope_head_dim() << ",\n"
      << "  \"v_head_dim\": " << a.v_head_dim() << ",\n"
      << "  \"head_dim\": " << a.qk_rope_head_dim() << ",\n"
      << "  \"hidden_act\": \"silu\",\n"
      << "  \"attention_bias\": false,\n"
      << "  \"attention_dropout\": 0.0,\n"
      << "  \"rms_norm_eps\": " << json_float(m.rms_norm_eps()) << ",\n"
      << "  \"rope_theta\": " << theta << ",\n"
      << "  \"rope_scaling\": "
      << (yarn.empty() ? std::string("null")
                       : concat("{\"type\": \"yarn\", \"rope_type\": \"yarn\"", yarn, "}"))
      << ",\n"
      << "  \"rope_parameters\": {\"rope_type\": \"" << rope_type << "\", \"rope_theta\": " << theta
      << yarn << "},\n"
      << "  \"rope_interleave\": " << json_bool(m.rope_style() == ModelConfig::INTERLEAVED) << ",\n"
      << "  \"max_position_embeddings\": " << max_positions(run) << ",\n"
      << "  \"initializer_range\": " << json_float(m.init_std()) << ",\n"
      << "  \"tie_word_embeddings\": false,\n"
      << "  \"scoring_func\": \"sigmoid\",\n"
      << "  \"topk_method\": \"noaux_tc\",\n"
      << hf_moe_fields(m)
      << hf_closing_fields(
             m, dtype, step,
             m.rope_style() == ModelConfig::INTERLEAVED ? "INTERLEAVED" : "ROTATE_HALF");
    return j.str();
  }
};

}  // namespace

std::unique_ptr<HfLayout> deepseek_v3_layout() {
  return std::make_unique<DeepseekV3>();
}

}  // namespace moetron::checkpoint
