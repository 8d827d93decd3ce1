#include "checkpoint/glm4_moe.h"

#include <charconv>
#include <sstream>

#include "configs/config.h"
#include "core/check.h"
#include "data/json.h"

namespace moetron::checkpoint {
namespace {

using moetron::head_dim;
using moetron::kv_heads;

using config::ModelConfig;
using detail::concat;

uint64_t u(int64_t v) {
  return static_cast<uint64_t>(v);
}

// The shortest text that reads back as the same float, always with a fraction or exponent so
// that JSON readers see a float (transformers' strict config types reject an int there).
std::string json_float(float v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

const char* json_bool(bool v) {
  return v ? "true" : "false";
}

}  // namespace

std::vector<ExportTensor> export_tensors(const ModelConfig& m, StDtype dtype) {
  const bool rope_permute = m.rope_style() == ModelConfig::INTERLEAVED;
  const std::string head = m.tie_word_embeddings() ? "model.embed_tokens.weight" : "lm_head.weight";
  // A [vocab, hidden] copy of the embedding or the head under another name.
  auto copy_of = [&](std::string name, const std::string& source) {
    return ExportTensor{std::move(name), source, {u(m.vocab_size()), u(m.hidden_size())}, dtype};
  };
  std::vector<ExportTensor> out;
  for (const ModelTensor& t : model_tensors(m)) {
    ExportTensor x{t.name, t.name, t.shape, dtype};
    if (t.name.ends_with(".mlp.gate.weight") || t.name.ends_with(".e_score_correction_bias"))
      x.dtype = StDtype::f32;
    if (rope_permute && (t.name.ends_with(".self_attn.q_proj.weight") ||
                         t.name.ends_with(".self_attn.k_proj.weight")))
      x.rope_rows = u(head_dim(m));
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
  return out;
}

void check_glm4_moe(const ModelConfig& m) {
  const config::MoeConfig& e = m.moe();
  if (e.n_routed_experts() == 0)
    throw Error(
        "model.moe.n_routed_experts is 0 (a dense model): glm4_moe is a mixture-of-experts "
        "architecture (vLLM's Glm4MoeForCausalLM refuses a model without an MoE layer and "
        "transformers builds every MTP block as MoE); export a model with n_routed_experts >= 2");
  if (e.scoring_func() != config::MoeConfig::SIGMOID)
    throw Error(
        "model.moe.scoring_func is SOFTMAX: glm4_moe's router always scores with sigmoid "
        "(transformers' Glm4MoeTopkRouter, vLLM's scoring_func=\"sigmoid\"); only SIGMOID models "
        "can be exported as glm4_moe");
  if (e.n_routed_experts() / e.n_group() < 2)
    throw Error(concat("model.moe.n_routed_experts / model.moe.n_group is ",
                       e.n_routed_experts() / e.n_group(),
                       ": glm4_moe scores each expert group by the sum of its 2 best experts, so "
                       "every group needs at least 2 experts"));
  if (m.hidden_size() % m.num_attention_heads() != 0 || head_dim(m) % 2 != 0)
    throw Error(concat("model.hidden_size / model.num_attention_heads = ", m.hidden_size(), " / ",
                       m.num_attention_heads(), " must be an even head_dim for RoPE"));
}

std::string glm4_moe_config_json(const config::RunConfig& run, StDtype dtype, int64_t step) {
  const ModelConfig& m = run.model();
  const config::MoeConfig& e = m.moe();
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
    << "  \"n_routed_experts\": " << e.n_routed_experts() << ",\n"
    << "  \"num_experts_per_tok\": " << e.num_experts_per_tok() << ",\n"
    << "  \"moe_intermediate_size\": " << e.moe_intermediate_size() << ",\n"
    << "  \"n_shared_experts\": " << e.n_shared_experts() << ",\n"
    << "  \"first_k_dense_replace\": " << e.first_k_dense_replace() << ",\n"
    << "  \"routed_scaling_factor\": " << json_float(e.routed_scaling_factor()) << ",\n"
    << "  \"norm_topk_prob\": " << json_bool(e.norm_topk_prob()) << ",\n"
    << "  \"n_group\": " << e.n_group() << ",\n"
    << "  \"topk_group\": " << e.topk_group() << ",\n"
    << "  \"num_nextn_predict_layers\": " << m.num_nextn_predict_layers() << ",\n"
    << "  \"bos_token_id\": null,\n"
    << "  \"eos_token_id\": null,\n"
    << "  \"pad_token_id\": null,\n"
    << "  \"use_cache\": true,\n"
    << "  \"dtype\": \"" << (dtype == StDtype::bf16 ? "bfloat16" : "float32") << "\",\n"
    << "  \"moetron\": {\"checkpoint_step\": " << step << ", \"rope_style\": "
    << data::json_quote(m.rope_style() == ModelConfig::INTERLEAVED
                            ? "INTERLEAVED (q_proj/k_proj rows permuted to rotate_half)"
                            : "ROTATE_HALF")
    << ", \"capacity_factor\": " << json_float(e.capacity_factor()) << "}\n"
    << "}\n";
  return j.str();
}

}  // namespace moetron::checkpoint
