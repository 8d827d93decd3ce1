#include "checkpoint/hf_layout.h"

#include <charconv>

#include "configs/config.h"
#include "core/check.h"
#include "data/json.h"

namespace moetron::checkpoint {

using config::ModelConfig;
using detail::concat;

std::unique_ptr<HfLayout> hf_layout_for(const ModelConfig& m) {
  const bool mla = has_layer_type(m, ModelConfig::MLA);
  if (mla &&
      (has_layer_type(m, ModelConfig::ATTENTION) || has_layer_type(m, ModelConfig::GATED_DELTANET)))
    throw Error(
        "model.layer_types mixes MLA with other layers: no Hugging Face architecture holds "
        "both (deepseek_v3 is all MLA, glm4_moe all attention, qwen3_5_moe_text Gated "
        "DeltaNet and attention)");
  if (mla) return deepseek_v3_layout();
  if (has_layer_type(m, ModelConfig::GATED_DELTANET)) return qwen3_5_moe_layout();
  return glm4_moe_layout();
}

void check_no_qwen_options(const ModelConfig& m, const std::string& model_type) {
  auto refuse = [&](const std::string& field, const std::string& value) {
    throw Error(concat(field, " is ", value, ": ", model_type,
                       " has no such option (Qwen3-Next's; the qwen3_5_moe_text export, for "
                       "models with GATED_DELTANET layers, has it)"));
  };
  if (m.attention_output_gate()) refuse("model.attention_output_gate", "true");
  if (m.qk_norm()) refuse("model.qk_norm", "true");
  if (m.zero_centered_norms()) refuse("model.zero_centered_norms", "true");
  if (m.partial_rotary_factor() != 1.0f)
    refuse("model.partial_rotary_factor", concat(m.partial_rotary_factor()));
  if (m.head_dim() != 0 && m.head_dim() * m.num_attention_heads() != m.hidden_size())
    refuse("model.head_dim", concat(m.head_dim(), " (not hidden_size / num_attention_heads)"));
  if (m.moe().shared_expert_gate()) refuse("model.moe.shared_expert_gate", "true");
}

std::vector<ExportTensor> export_tensors(const ModelConfig& m, const HfLayout& layout,
                                         StDtype dtype) {
  const std::string head = m.tie_word_embeddings() ? "model.embed_tokens.weight" : "lm_head.weight";
  const auto vocab = static_cast<uint64_t>(m.vocab_size());
  const auto hidden = static_cast<uint64_t>(m.hidden_size());
  // A [vocab, hidden] copy of the embedding or the head under another name.
  auto copy_of = [&](std::string name, const std::string& source) {
    return ExportTensor{std::move(name), source, {vocab, hidden}, dtype, 0, {}};
  };
  std::vector<ExportTensor> out;
  for (const ModelTensor& t : model_tensors(m)) {
    ExportTensor x{t.name, t.name, t.shape, dtype, layout.rope_rows(m, t.name), {}};
    if (t.name.ends_with(".mlp.gate.weight") || t.name.ends_with(".e_score_correction_bias"))
      x.dtype = StDtype::f32;
    // The MTP layer's copies of the embedding and the head go first in the layer, so a shard
    // boundary never separates them from the layer.
    if (t.name.starts_with("model.layers.") && t.name.ends_with(".enorm.weight")) {
      const std::string p = t.name.substr(0, t.name.size() - std::string("enorm.weight").size());
      out.push_back(copy_of(p + "embed_tokens.weight", "model.embed_tokens.weight"));
      out.push_back(copy_of(p + "shared_head.head.weight", head));
    }
    out.push_back(std::move(x));
  }
  if (m.tie_word_embeddings())
    out.push_back(copy_of("lm_head.weight", "model.embed_tokens.weight"));
  layout.adapt(m, out);
  return out;
}

std::string json_float(float v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

void check_hf_moe(const ModelConfig& m, const std::string& model_type) {
  const config::MoeConfig& e = m.moe();
  if (e.n_routed_experts() == 0)
    throw Error(concat(
        "model.moe.n_routed_experts is 0 (a dense model): ", model_type,
        " is a mixture-of-experts architecture (vLLM refuses a model without an MoE layer and "
        "transformers builds every MTP block as MoE); export a model with n_routed_experts >= 2"));
  if (e.scoring_func() != config::MoeConfig::SIGMOID)
    throw Error(concat("model.moe.scoring_func is SOFTMAX: ", model_type,
                       "'s router always scores with sigmoid (transformers' TopkRouter, vLLM's "
                       "scoring_func=\"sigmoid\"); only SIGMOID models can be exported as ",
                       model_type));
  if (e.n_routed_experts() / e.n_group() < 2)
    throw Error(concat("model.moe.n_routed_experts / model.moe.n_group is ",
                       e.n_routed_experts() / e.n_group(), ": ", model_type,
                       " scores each expert group by the sum of its 2 best experts, so every "
                       "group needs at least 2 experts"));
}

std::string hf_moe_fields(const ModelConfig& m) {
  const config::MoeConfig& e = m.moe();
  return concat("  \"n_routed_experts\": ", e.n_routed_experts(), ",\n",
                "  \"num_experts_per_tok\": ", e.num_experts_per_tok(), ",\n",
                "  \"moe_intermediate_size\": ", e.moe_intermediate_size(), ",\n",
                "  \"n_shared_experts\": ", e.n_shared_experts(), ",\n",
                "  \"first_k_dense_replace\": ", e.first_k_dense_replace(), ",\n",
                "  \"routed_scaling_factor\": ", json_float(e.routed_scaling_factor()), ",\n",
                "  \"norm_topk_prob\": ", e.norm_topk_prob() ? "true" : "false", ",\n",
                "  \"n_group\": ", e.n_group(), ",\n", "  \"topk_group\": ", e.topk_group(), ",\n",
                "  \"num_nextn_predict_layers\": ", m.num_nextn_predict_layers(), ",\n");
}

std::string hf_closing_fields(const ModelConfig& m, StDtype dtype, int64_t step,
                              const std::string& rope_note) {
  return concat("  \"bos_token_id\": null,\n  \"eos_token_id\": null,\n  \"pad_token_id\": null,\n",
                "  \"use_cache\": true,\n", "  \"dtype\": \"",
                dtype == StDtype::bf16 ? "bfloat16" : "float32", "\",\n",
                "  \"moetron\": {\"checkpoint_step\": ", step,
                ", \"rope_style\": ", data::json_quote(rope_note),
                ", \"capacity_factor\": ", json_float(m.moe().capacity_factor()), "}\n}\n");
}

std::vector<std::string> common_notes(const ModelConfig& m, const std::string& model_type) {
  std::vector<std::string> notes;
  if (m.tie_word_embeddings())
    notes.push_back("tied embeddings: lm_head.weight written as a copy of the embedding");
  if (m.moe().capacity_factor() > 0)
    notes.push_back(concat("capacity_factor ", m.moe().capacity_factor(),
                           " is a training setting: ", model_type,
                           " (and the export) is dropless"));
  if (m.moe().n_shared_experts() == 0)
    notes.push_back(
        "n_shared_experts 0: transformers runs a zero-width shared expert; other "
        "engines may expect at least one");
  return notes;
}

}  // namespace moetron::checkpoint
