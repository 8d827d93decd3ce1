// The qwen3_5_moe_text (Qwen3_5MoeForCausalLM, transformers >= 5.2) layout: Qwen3.5's and
// Qwen3-Next's hybrid of Gated DeltaNet and gated attention layers, with their MoE (softmax
// top-k renormalised, a shared expert scaled by a sigmoid gate, no router bias). Chosen over
// qwen3_next: both run the same math, but qwen3_next fuses the projections per key head
// (in_proj_qkvz, in_proj_ba, rows grouped by key head), which nothing splits again on load,
// while qwen3_5_moe_text keeps in_proj_qkv ([all q | all k | all v]) beside separate z, b and a
// projections, moetron's own split up to one concatenation. docs/export.md explains every
// choice.
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

bool ends_with(const std::string& s, const std::string& tail) {
  return s.ends_with(tail);
}

// s with its first `from` replaced by `to` (s when absent).
std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

class Qwen35Moe final : public HfLayout {
 public:
  std::string model_type() const override { return "qwen3_5_moe_text"; }

  void check(const ModelConfig& m) const override {
    const config::MoeConfig& e = m.moe();
    auto refuse = [&](const std::string& field, const std::string& value, const std::string& why) {
      throw Error(concat(field, " is ", value, ": ", model_type(), " ", why));
    };
    if (has_layer_type(m, ModelConfig::MLA))
      refuse("model.layer_types", "with MLA", "has Gated DeltaNet and attention layers only");
    if (has_layer_type(m, ModelConfig::ATTENTION)) {
      if (!m.attention_output_gate())
        refuse("model.attention_output_gate", "false",
               "always gates its attention layers' output (set it true)");
      if (!m.qk_norm()) refuse("model.qk_norm", "false", "always normalises q and k (set it true)");
    }
    if (!m.zero_centered_norms())
      refuse("model.zero_centered_norms", "false",
             "stores every norm but Gated DeltaNet's as an offset from 1 (set it true)");
    if (m.rope_style() != ModelConfig::ROTATE_HALF)
      refuse("model.rope_style", "INTERLEAVED", "rotates halves (ROTATE_HALF)");
    if (m.rope_scaling().factor() != 1.0f)
      refuse("model.rope_scaling.factor", concat(m.rope_scaling().factor()),
             "is written with unscaled RoPE only (factor 1)");
    if (e.n_routed_experts() == 0)
      refuse("model.moe.n_routed_experts", "0", "is a mixture-of-experts architecture");
    if (e.first_k_dense_replace() != 0)
      refuse("model.moe.first_k_dense_replace", concat(e.first_k_dense_replace()),
             "makes every layer MoE (set it 0)");
    if (e.scoring_func() != config::MoeConfig::SOFTMAX)
      refuse("model.moe.scoring_func", "SIGMOID", "routes by softmax (set SOFTMAX)");
    if (!e.norm_topk_prob())
      refuse("model.moe.norm_topk_prob", "false", "always renormalises the top-k weights");
    if (e.routed_scaling_factor() != 1.0f)
      refuse("model.moe.routed_scaling_factor", concat(e.routed_scaling_factor()),
             "does not scale the routed weights (set 1)");
    if (e.n_group() != 1)
      refuse("model.moe.n_group", concat(e.n_group()), "has no group-limited routing (set 1)");
    if (e.bias_update_speed() != 0.0f)
      refuse("model.moe.bias_update_speed", concat(e.bias_update_speed()),
             "has no router bias (auxiliary-loss-free balancing changes the selection)");
    if (e.n_shared_experts() == 0 || !e.shared_expert_gate())
      refuse("model.moe", "without a gated shared expert",
             "always has one (n_shared_experts >= 1, shared_expert_gate true)");
    if (m.num_nextn_predict_layers() > 1)
      refuse("model.num_nextn_predict_layers", concat(m.num_nextn_predict_layers()),
             "names one MTP module (mtp.*; Qwen3-Next shares its fc and norms over the depth, "
             "moetron's modules have their own): export a model with at most 1");
  }

  uint64_t rope_rows(const ModelConfig&, const std::string&) const override { return 0; }

  std::vector<std::string> notes(const ModelConfig& m) const override {
    std::vector<std::string> notes = common_notes(m, model_type());
    notes.insert(notes.begin(),
                 "linear_attn.in_proj_q/_k/_v and conv1d_q/_k/_v written fused, as in_proj_qkv "
                 "and conv1d.weight [channels, 1, kernel]");
    if (m.num_nextn_predict_layers() == 1)
      notes.push_back(
          "MTP module written as Qwen3-Next names it (mtp.fc, mtp.pre_fc_norm_embedding, "
          "mtp.pre_fc_norm_hidden, mtp.layers.0, mtp.norm); transformers ignores mtp.*");
    if (m.moe().aux_loss_coeff() > 0)
      notes.push_back(
          "router_aux_loss_coef from aux_loss_coeff (a training setting; transformers sums "
          "its loss over all layers' tokens, moetron per layer)");
    return notes;
  }

  void adapt(const ModelConfig& m, std::vector<ExportTensor>& tensors) const override {
    const std::string mtp = concat("model.layers.", m.num_hidden_layers(), ".");
    const std::string fused[2][4] = {
        {"in_proj_q.weight", "in_proj_k.weight", "in_proj_v.weight", "in_proj_qkv.weight"},
        {"conv1d_q.weight", "conv1d_k.weight", "conv1d_v.weight", "conv1d.weight"}};
    std::vector<ExportTensor> out;
    for (size_t i = 0; i < tensors.size(); ++i) {
      ExportTensor t = tensors[i];
      if (ends_with(t.name, ".mlp.gate.e_score_correction_bias")) continue;  // no router bias
      // DeepSeek's per-module copies of the embedding and the head: Qwen's MTP shares them.
      if (t.name.starts_with(mtp) && (ends_with(t.name, ".embed_tokens.weight") ||
                                      ends_with(t.name, ".shared_head.head.weight")))
        continue;
      bool skip = false;
      for (const auto& f : fused) {
        if (ends_with(t.name, ".linear_attn." + f[1]) || ends_with(t.name, ".linear_attn." + f[2]))
          skip = true;  // folded into the fused tensor at its q part
        if (!ends_with(t.name, ".linear_attn." + f[0])) continue;
        // The q, k and v parts are consecutive in model_tensors' order.
        const ExportTensor& k = tensors.at(i + 1);
        const ExportTensor& v = tensors.at(i + 2);
        t.name = replaced(t.name, f[0], f[3]);
        t.more_sources = {k.source, v.source};
        t.shape[0] += k.shape[0] + v.shape[0];
        if (f[3] == "conv1d.weight") t.shape = {t.shape[0], 1, t.shape[1]};
      }
      if (skip) continue;
      t.name = replaced(t.name, ".mlp.shared_experts.", ".mlp.shared_expert.");
      if (t.name.starts_with(mtp)) {
        const std::string rest = t.name.substr(mtp.size());
        if (rest == "enorm.weight")
          t.name = "mtp.pre_fc_norm_embedding.weight";
        else if (rest == "hnorm.weight")
          t.name = "mtp.pre_fc_norm_hidden.weight";
        else if (rest == "eh_proj.weight")
          t.name = "mtp.fc.weight";
        else if (rest == "shared_head.norm.weight")
          t.name = "mtp.norm.weight";
        else
          t.name = "mtp.layers.0." + rest;
      }
      out.push_back(std::move(t));
    }
    tensors = std::move(out);
  }

  std::string config_json(const config::RunConfig& run, StDtype dtype,
                          int64_t step) const override {
    const ModelConfig& m = run.model();
    const config::MoeConfig& e = m.moe();
    const config::GatedDeltaNetConfig& g = m.linear_attention();
    std::string layer_types;
    for (int64_t l = 0; l < m.num_hidden_layers(); ++l)
      layer_types += concat(
          l > 0 ? ", " : "", "\"",
          layer_type(m, l) == ModelConfig::GATED_DELTANET ? "linear_attention" : "full_attention",
          "\"");
    std::ostringstream j;
    j << "{\n"
      << "  \"architectures\": [\"Qwen3_5MoeForCausalLM\"],\n"
      << "  \"model_type\": \"qwen3_5_moe_text\",\n"
      << "  \"vocab_size\": " << m.vocab_size() << ",\n"
      << "  \"hidden_size\": " << m.hidden_size() << ",\n"
      << "  \"num_hidden_layers\": " << m.num_hidden_layers() << ",\n"
      << "  \"layer_types\": [" << layer_types << "],\n"
      << "  \"num_attention_heads\": " << m.num_attention_heads() << ",\n"
      << "  \"num_key_value_heads\": " << kv_heads(m) << ",\n"
      << "  \"head_dim\": " << head_dim(m) << ",\n"
      << "  \"attention_bias\": false,\n"
      << "  \"attention_dropout\": 0.0,\n"
      // Partial RoPE stated explicitly: transformers' default for a missing factor is 0.25.
      << "  \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": "
      << json_float(m.rope_theta())
      << ", \"partial_rotary_factor\": " << json_float(m.partial_rotary_factor()) << "},\n"
      << "  \"linear_num_key_heads\": " << g.linear_num_key_heads() << ",\n"
      << "  \"linear_key_head_dim\": " << g.linear_key_head_dim() << ",\n"
      << "  \"linear_num_value_heads\": " << g.linear_num_value_heads() << ",\n"
      << "  \"linear_value_head_dim\": " << g.linear_value_head_dim() << ",\n"
      << "  \"linear_conv_kernel_dim\": " << g.linear_conv_kernel_dim() << ",\n"
      << "  \"num_experts\": " << e.n_routed_experts() << ",\n"
      << "  \"num_experts_per_tok\": " << e.num_experts_per_tok() << ",\n"
      << "  \"moe_intermediate_size\": " << e.moe_intermediate_size() << ",\n"
      << "  \"shared_expert_intermediate_size\": "
      << int64_t{e.n_shared_experts()} * e.moe_intermediate_size() << ",\n"
      << "  \"router_aux_loss_coef\": " << json_float(e.aux_loss_coeff()) << ",\n"
      << "  \"mtp_num_hidden_layers\": " << m.num_nextn_predict_layers() << ",\n"
      << "  \"hidden_act\": \"silu\",\n"
      << "  \"rms_norm_eps\": " << json_float(m.rms_norm_eps()) << ",\n"
      << "  \"max_position_embeddings\": " << run.data().seq_len() << ",\n"
      << "  \"initializer_range\": " << json_float(m.init_std()) << ",\n"
      << "  \"tie_word_embeddings\": " << (m.tie_word_embeddings() ? "true" : "false") << ",\n"
      << hf_closing_fields(m, dtype, step, "ROTATE_HALF");
    return j.str();
  }
};

}  // namespace

std::unique_ptr<HfLayout> qwen3_5_moe_layout() {
  return std::make_unique<Qwen35Moe>();
}

}  // namespace moetron::checkpoint
