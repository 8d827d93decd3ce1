#include "checkpoint/model_tensors.h"

#include <algorithm>
#include <limits>

#include "configs/config.h"

namespace moetron::checkpoint {
namespace {

using moetron::head_dim;
using moetron::kv_heads;

using config::ModelConfig;

uint64_t u(int64_t v) {
  return static_cast<uint64_t>(v);
}

// docs/moe.md: layers l >= first_k_dense_replace and every MTP block (l >= L) are MoE.
bool is_moe_layer(const ModelConfig& m, int64_t l) {
  return m.moe().n_routed_experts() > 0 &&
         (l >= m.moe().first_k_dense_replace() || l >= m.num_hidden_layers());
}

std::string layer(int64_t l) {
  return "model.layers." + std::to_string(l) + ".";
}

// Sizes of up to ~2^94 (three int32 factors and a layer count) fit; the result saturates.
using Wide = unsigned __int128;

uint64_t saturate(Wide v) {
  return v > std::numeric_limits<uint64_t>::max() ? std::numeric_limits<uint64_t>::max()
                                                  : static_cast<uint64_t>(v);
}

}  // namespace

std::vector<ModelTensor> model_tensors(const ModelConfig& m) {
  const uint64_t d = u(m.hidden_size()), V = u(m.vocab_size()), hd = u(head_dim(m));
  const uint64_t H = u(m.num_attention_heads()), KV = u(kv_heads(m));
  const int64_t L = m.num_hidden_layers(), D = m.num_nextn_predict_layers();
  const config::MoeConfig& e = m.moe();
  std::vector<ModelTensor> out;
  out.push_back({"model.embed_tokens.weight", {V, d}});
  auto swiglu = [&](const std::string& prefix, uint64_t inter) {
    out.push_back({prefix + "gate_proj.weight", {inter, d}});
    out.push_back({prefix + "up_proj.weight", {inter, d}});
    out.push_back({prefix + "down_proj.weight", {d, inter}});
  };
  for (int64_t l = 0; l < L + D; ++l) {
    const std::string p = layer(l);
    if (l >= L) {  // MTP module k = l - L + 1
      out.push_back({p + "enorm.weight", {d}});
      out.push_back({p + "hnorm.weight", {d}});
      out.push_back({p + "eh_proj.weight", {d, 2 * d}});
    }
    out.push_back({p + "input_layernorm.weight", {d}});
    if (layer_type(m, l) == ModelConfig::MLA) {
      const config::MlaConfig& a = m.mla();
      const uint64_t ql = u(a.q_lora_rank()), r = u(a.kv_lora_rank()),
                     rope = u(a.qk_rope_head_dim());
      const uint64_t qk = u(a.qk_nope_head_dim()) + rope, v = u(a.v_head_dim());
      if (ql > 0) {
        out.push_back({p + "self_attn.q_a_proj.weight", {ql, d}});
        out.push_back({p + "self_attn.q_a_layernorm.weight", {ql}});
        out.push_back({p + "self_attn.q_b_proj.weight", {H * qk, ql}});
      } else {
        out.push_back({p + "self_attn.q_proj.weight", {H * qk, d}});
      }
      out.push_back({p + "self_attn.kv_a_proj_with_mqa.weight", {r + rope, d}});
      out.push_back({p + "self_attn.kv_a_layernorm.weight", {r}});
      out.push_back({p + "self_attn.kv_b_proj.weight", {H * (qk - rope + v), r}});
      out.push_back({p + "self_attn.o_proj.weight", {d, H * v}});
    } else if (layer_type(m, l) == ModelConfig::GATED_DELTANET) {
      const config::GatedDeltaNetConfig& g = m.linear_attention();
      const uint64_t kw = u(g.linear_num_key_heads()) * u(g.linear_key_head_dim());
      const uint64_t vh = u(g.linear_num_value_heads()), vw = vh * u(g.linear_value_head_dim());
      const uint64_t taps = u(g.linear_conv_kernel_dim());
      const std::string a = p + "linear_attn.";
      out.push_back({a + "in_proj_q.weight", {kw, d}});
      out.push_back({a + "in_proj_k.weight", {kw, d}});
      out.push_back({a + "in_proj_v.weight", {vw, d}});
      out.push_back({a + "in_proj_z.weight", {vw, d}});
      out.push_back({a + "in_proj_b.weight", {vh, d}});
      out.push_back({a + "in_proj_a.weight", {vh, d}});
      out.push_back({a + "conv1d_q.weight", {kw, taps}});
      out.push_back({a + "conv1d_k.weight", {kw, taps}});
      out.push_back({a + "conv1d_v.weight", {vw, taps}});
      out.push_back({a + "A_log", {vh}});
      out.push_back({a + "dt_bias", {vh}});
      out.push_back({a + "norm.weight", {u(g.linear_value_head_dim())}});
      out.push_back({a + "out_proj.weight", {d, vw}});
    } else {
      const uint64_t q_rows = (m.attention_output_gate() ? 2 : 1) * H * hd;
      out.push_back({p + "self_attn.q_proj.weight", {q_rows, d}});
      out.push_back({p + "self_attn.k_proj.weight", {KV * hd, d}});
      out.push_back({p + "self_attn.v_proj.weight", {KV * hd, d}});
      if (m.qk_norm()) {
        out.push_back({p + "self_attn.q_norm.weight", {hd}});
        out.push_back({p + "self_attn.k_norm.weight", {hd}});
      }
      out.push_back({p + "self_attn.o_proj.weight", {d, H * hd}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    if (is_moe_layer(m, l)) {
      const uint64_t E = u(e.n_routed_experts()), I = u(e.moe_intermediate_size());
      out.push_back({p + "mlp.gate.weight", {E, d}});
      out.push_back({p + "mlp.gate.e_score_correction_bias", {E}});
      for (uint64_t x = 0; x < E; ++x) swiglu(p + "mlp.experts." + std::to_string(x) + ".", I);
      if (e.n_shared_experts() > 0) swiglu(p + "mlp.shared_experts.", u(e.n_shared_experts()) * I);
      if (e.shared_expert_gate()) out.push_back({p + "mlp.shared_expert_gate.weight", {1, d}});
    } else {
      swiglu(p + "mlp.", u(m.intermediate_size()));
    }
    if (l >= L) out.push_back({p + "shared_head.norm.weight", {d}});
  }
  out.push_back({"model.norm.weight", {d}});
  if (!m.tie_word_embeddings()) out.push_back({"lm_head.weight", {V, d}});
  return out;
}

ModelSize model_size(const ModelConfig& m) {
  const Wide d = u(m.hidden_size()), V = u(m.vocab_size()), hd = u(head_dim(m));
  const Wide H = u(m.num_attention_heads()), KV = u(kv_heads(m));
  const Wide L = u(m.num_hidden_layers()), D = u(m.num_nextn_predict_layers());
  const config::MoeConfig& e = m.moe();
  const Wide E = u(e.n_routed_experts()), I = u(e.moe_intermediate_size());
  // Per layer: the mixer and the block's norms; the FFN, dense or MoE; the MTP extras. Layers
  // of each mixer: the pattern's share of the main layers, and the MTP blocks, which take the
  // last main layer's.
  const int pattern = std::max(1, m.layer_types_size());
  auto layers_of = [&](ModelConfig::LayerType t) {
    Wide n = 0;
    for (int i = 0; i < pattern; ++i)
      if (layer_type(m, i) == t) n += L / u(pattern);
    return n + (layer_type(m, m.num_hidden_layers() - 1) == t ? D : 0);
  };
  const config::MlaConfig& a = m.mla();
  const Wide ql = u(a.q_lora_rank()), r = u(a.kv_lora_rank()), rope = u(a.qk_rope_head_dim());
  const Wide nope = u(a.qk_nope_head_dim()), v = u(a.v_head_dim());
  const Wide mla_tensors = 2 + (ql > 0 ? 7 : 5);
  const Wide mla_elements =
      2 * d + (ql > 0 ? ql * d + ql + H * (nope + rope) * ql : H * (nope + rope) * d) +
      (r + rope) * d + r + H * (nope + v) * r + d * H * v;
  const config::GatedDeltaNetConfig& g = m.linear_attention();
  const Wide kw = u(g.linear_num_key_heads()) * u(g.linear_key_head_dim());
  const Wide vh = u(g.linear_num_value_heads()), vw = vh * u(g.linear_value_head_dim());
  const Wide gdn_elements = 2 * d + (2 * kw + 2 * vw + 2 * vh) * d +
                            (2 * kw + vw) * u(g.linear_conv_kernel_dim()) + 2 * vh +
                            u(g.linear_value_head_dim()) + d * vw;
  const Wide attn_layers = layers_of(ModelConfig::ATTENTION),
             mla_layers = layers_of(ModelConfig::MLA),
             gdn_layers = layers_of(ModelConfig::GATED_DELTANET);
  const Wide q_rows = (m.attention_output_gate() ? 2 : 1) * H * hd;
  const Wide qk_norms = m.qk_norm() ? 1 : 0;
  const Wide mixer_tensors =
      attn_layers * (6 + 2 * qk_norms) + mla_layers * mla_tensors + gdn_layers * (2 + 13);
  const Wide mixer_elements =
      attn_layers * (2 * d + (q_rows + H * hd + 2 * KV * hd) * d + qk_norms * 2 * hd) +
      mla_layers * mla_elements + gdn_layers * gdn_elements;
  const Wide dense_tensors = 3, dense_elements = 3 * u(m.intermediate_size()) * d;
  const Wide shared = u(e.n_shared_experts()) * I;
  const Wide shared_gate = e.shared_expert_gate() ? 1 : 0;
  const Wide moe_tensors = 2 + 3 * E + (shared > 0 ? 3 : 0) + shared_gate;
  const Wide moe_elements = E * d + E + 3 * E * I * d + 3 * shared * d + shared_gate * d;
  const Wide mtp_tensors = 4, mtp_elements = 2 * d + 2 * d * d + d;
  // MoE layers: from first_k_dense_replace on, and every MTP block.
  const Wide dense_layers =
      E > 0 ? std::min<Wide>(L, u(std::max(0, e.first_k_dense_replace()))) : L;
  const Wide moe_layers = E > 0 ? L - dense_layers + D : 0;
  const Wide head = m.tie_word_embeddings() ? 0 : 1;
  const Wide tensors = 1 + mixer_tensors + (dense_layers + (E > 0 ? 0 : D)) * dense_tensors +
                       moe_layers * moe_tensors + D * mtp_tensors + 1 + head;
  const Wide elements = V * d + mixer_elements + (dense_layers + (E > 0 ? 0 : D)) * dense_elements +
                        moe_layers * moe_elements + D * mtp_elements + d + head * V * d;
  return {saturate(tensors), saturate(elements)};
}

}  // namespace moetron::checkpoint
