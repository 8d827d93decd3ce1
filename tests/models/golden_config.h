// Model, MoE and optimizer settings read from the root attributes of a golden file (the
// attribute names are the config field names; tests/reference/README.md).
#pragma once

#include <algorithm>
#include <functional>
#include <span>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/dims.h"
#include "models/model.h"
#include "tests/golden.h"
#include "tests/models/layer_check.h"

namespace moetron::test {

inline MoeDims moe_dims(const Golden& g) {
  MoeDims m;
  m.experts = static_cast<int64_t>(g.attr_num("n_routed_experts"));
  m.k = static_cast<int64_t>(g.attr_num("num_experts_per_tok"));
  m.intermediate = static_cast<int64_t>(g.attr_num("moe_intermediate_size"));
  m.shared = static_cast<int64_t>(g.attr_num("n_shared_experts"));
  m.n_group = static_cast<int64_t>(g.attr_num("n_group"));
  m.topk_group = static_cast<int64_t>(g.attr_num("topk_group"));
  m.scaling = static_cast<float>(g.attr_num("routed_scaling_factor"));
  m.capacity_factor = static_cast<float>(g.attr_num("capacity_factor"));
  m.scoring =
      g.attr_str("scoring_func") == "softmax" ? ops::Scoring::softmax : ops::Scoring::sigmoid;
  m.norm_topk_prob = g.attr_num("norm_topk_prob") != 0;
  m.seq_aux_alpha = static_cast<float>(g.attr_num("seq_aux_loss_alpha"));
  m.aux_coeff = static_cast<float>(g.attr_num("aux_loss_coeff"));
  m.z_coeff = static_cast<float>(g.attr_num("z_loss_coeff"));
  m.bias_update_speed = static_cast<float>(g.attr_num("bias_update_speed"));
  m.shared_gate = g.has_attr("shared_expert_gate") && g.attr_num("shared_expert_gate") != 0;
  return m;
}

// Every model field, and the MoE ones when the file has them.
inline config::ModelConfig model_config(const Golden& g) {
  config::ModelConfig m;
  m.set_vocab_size(static_cast<int>(g.attr_num("vocab_size")));
  m.set_hidden_size(static_cast<int>(g.attr_num("hidden_size")));
  m.set_num_hidden_layers(static_cast<int>(g.attr_num("num_hidden_layers")));
  m.set_num_attention_heads(static_cast<int>(g.attr_num("num_attention_heads")));
  m.set_num_key_value_heads(static_cast<int>(g.attr_num("num_key_value_heads")));
  m.set_intermediate_size(static_cast<int>(g.attr_num("intermediate_size")));
  m.set_rope_theta(static_cast<float>(g.attr_num("rope_theta")));
  m.set_rope_style(g.attr_str("rope_style") == "interleaved" ? config::ModelConfig::INTERLEAVED
                                                             : config::ModelConfig::ROTATE_HALF);
  m.set_rms_norm_eps(static_cast<float>(g.attr_num("rms_norm_eps")));
  m.set_tie_word_embeddings(g.attr_num("tie_word_embeddings") != 0);
  m.set_num_nextn_predict_layers(static_cast<int>(g.attr_num("num_nextn_predict_layers")));
  if (g.has_attr("n_routed_experts")) {
    const MoeDims md = moe_dims(g);
    config::MoeConfig* e = m.mutable_moe();
    e->set_n_routed_experts(static_cast<int>(md.experts));
    e->set_num_experts_per_tok(static_cast<int>(md.k));
    e->set_moe_intermediate_size(static_cast<int>(md.intermediate));
    e->set_n_shared_experts(static_cast<int>(md.shared));
    e->set_first_k_dense_replace(static_cast<int>(g.attr_num("first_k_dense_replace")));
    e->set_routed_scaling_factor(md.scaling);
    e->set_scoring_func(md.scoring == ops::Scoring::softmax ? config::MoeConfig::SOFTMAX
                                                            : config::MoeConfig::SIGMOID);
    e->set_norm_topk_prob(md.norm_topk_prob);
    e->set_n_group(static_cast<int>(md.n_group));
    e->set_topk_group(static_cast<int>(md.topk_group));
    e->set_bias_update_speed(md.bias_update_speed);
    e->set_seq_aux_loss_alpha(md.seq_aux_alpha);
    e->set_aux_loss_coeff(md.aux_coeff);
    e->set_z_loss_coeff(md.z_coeff);
    e->set_capacity_factor(md.capacity_factor);
  }
  return m;
}

// A whole-model golden's model (its config, batch and seq_len) with its initial weights, its
// projections in `compute` precision.
inline std::unique_ptr<Model> golden_model(const Golden& g, DType compute = DType::f32) {
  Runtime rt;
  rt.compute = compute;
  auto model = std::make_unique<Model>(model_config(g), static_cast<int64_t>(g.attr_num("batch")),
                                       static_cast<int64_t>(g.attr_num("seq_len")), rt);
  load_params(model->params(), g, "/params");
  return model;
}

// A TrainStep batch source that hands out the golden's tokens from `offset` on.
inline std::function<void(std::span<int32_t>)> feed(const std::vector<int32_t>& tokens,
                                                    size_t offset) {
  return [&tokens, offset](std::span<int32_t> out) {
    std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
  };
}

inline config::OptimizerConfig optimizer_config(const Golden& g) {
  config::OptimizerConfig o;
  o.set_lr(static_cast<float>(g.attr_num("lr")));
  o.set_beta1(static_cast<float>(g.attr_num("beta1")));
  o.set_beta2(static_cast<float>(g.attr_num("beta2")));
  o.set_eps(static_cast<float>(g.attr_num("eps")));
  o.set_weight_decay(static_cast<float>(g.attr_num("weight_decay")));
  o.set_grad_clip(static_cast<float>(g.attr_num("grad_clip")));
  if (g.has_attr("decay_norms_and_embeddings"))
    o.set_decay_norms_and_embeddings(g.attr_num("decay_norms_and_embeddings") != 0);
  return o;
}

}  // namespace moetron::test
