// Small random models for the generation tests: GQA, MLA or a Gated DeltaNet hybrid, a dense
// first layer, MoE layers with shared experts, D MTP modules; the RoPE style, routing and head
// tying vary by case.
#pragma once

#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/params.h"

namespace moetron::test {

struct TinyCase {
  const char* name;
  config::ModelConfig::RopeStyle rope = config::ModelConfig::ROTATE_HALF;
  bool moe = true;
  bool softmax = false;  // softmax router (else sigmoid with group-limited routing)
  bool tied = false;
  int depth = 2;  // MTP modules
  // 0: GQA attention; 1: MLA with a q LoRA; 2: MLA with q_proj, v_head_dim != nope, and YaRN.
  int mla = 0;
  // Qwen3-Next-style (mla 0): 1: Gated DeltaNet, Gated DeltaNet, then gated attention (q/k
  // norms, partial RoPE, output gate, head_dim set), zero-centred norms, a gated shared expert;
  // the MTP blocks take the attention. 2: every block (MTP ones too) Gated DeltaNet.
  int hybrid = 0;
};

// gtest prints a case by its name (test names and failures).
inline void PrintTo(const TinyCase& c, std::ostream* os) {
  *os << c.name;
}

inline config::ModelConfig tiny_config(const TinyCase& c, int vocab = 48) {
  config::ModelConfig m;
  m.set_vocab_size(vocab);
  m.set_hidden_size(32);
  m.set_num_hidden_layers(3);
  m.set_num_attention_heads(4);
  m.set_num_key_value_heads(2);
  m.set_intermediate_size(48);
  m.set_rope_theta(10000.0f);
  m.set_rope_style(c.rope);
  m.set_rms_norm_eps(1e-6f);
  m.set_tie_word_embeddings(c.tied);
  m.set_num_nextn_predict_layers(c.depth);
  if (c.mla > 0) {
    m.add_layer_types(config::ModelConfig::MLA);
    config::MlaConfig* a = m.mutable_mla();
    a->set_q_lora_rank(c.mla == 1 ? 24 : 0);
    a->set_kv_lora_rank(16);
    a->set_qk_nope_head_dim(8);
    a->set_qk_rope_head_dim(4);
    a->set_v_head_dim(c.mla == 1 ? 8 : 12);
    if (c.mla == 2) {
      config::RopeScalingConfig* r = m.mutable_rope_scaling();
      r->set_factor(4.0f);
      r->set_original_max_position_embeddings(16);
      r->set_mscale(1.0f);
      r->set_mscale_all_dim(0.8f);
    }
  }
  if (c.hybrid > 0) {
    using config::ModelConfig;
    if (c.hybrid == 1) {
      m.add_layer_types(ModelConfig::GATED_DELTANET);
      m.add_layer_types(ModelConfig::GATED_DELTANET);
      m.add_layer_types(ModelConfig::ATTENTION);
    } else {
      m.add_layer_types(ModelConfig::GATED_DELTANET);
    }
    m.set_head_dim(12);
    m.set_partial_rotary_factor(0.5f);
    m.set_attention_output_gate(true);
    m.set_qk_norm(true);
    m.set_zero_centered_norms(true);
    config::GatedDeltaNetConfig* g = m.mutable_linear_attention();
    g->set_linear_num_key_heads(2);
    g->set_linear_key_head_dim(8);
    g->set_linear_num_value_heads(4);
    g->set_linear_value_head_dim(6);
    g->set_linear_conv_kernel_dim(4);
  }
  if (c.moe) {
    config::MoeConfig* e = m.mutable_moe();
    e->set_n_routed_experts(4);
    e->set_num_experts_per_tok(2);
    e->set_moe_intermediate_size(16);
    e->set_n_shared_experts(1);
    e->set_first_k_dense_replace(1);
    e->set_routed_scaling_factor(2.5f);
    e->set_norm_topk_prob(true);
    e->set_shared_expert_gate(c.hybrid > 0);
    if (c.softmax) {
      e->set_scoring_func(config::MoeConfig::SOFTMAX);
    } else {
      e->set_scoring_func(config::MoeConfig::SIGMOID);
      e->set_n_group(2);
      e->set_topk_group(1);
    }
  }
  return m;
}

// Weights ~ N(0, std) by (seed, name) and a nonzero balancing bias, so that selection (biased)
// and gates (unbiased) differ as in a trained model.
inline void init_tiny(ParamTable& params, uint64_t seed, float std = 0.2f) {
  params.init(seed, std);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (const ParamInfo& p : params.infos()) {
    if (!p.name.ends_with("e_score_correction_bias")) continue;
    std::mt19937_64 gen(seed + std::hash<std::string>{}(p.name));  // by name, as init
    for (float& b : params.value(params.find(p.name)).span<float>()) b = u(gen);
  }
}

inline std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int32_t> u(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = u(gen);
  return t;
}

// max |a - b| / max |ref|: the error relative to the scale of the reference.
inline double relative_error(std::span<const float> a, std::span<const float> ref) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - ref[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace moetron::test
