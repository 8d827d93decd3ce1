#include "models/model_config.h"

#include "configs/config.h"
#include "models/model.h"

namespace moetron {

ModelDims model_dims(const config::ModelConfig& cfg, int64_t batch, int64_t seq) {
  ModelDims d;
  d.batch = batch;
  d.seq = seq;
  d.hidden = cfg.hidden_size();
  d.heads = cfg.num_attention_heads();
  d.kv_heads = cfg.num_key_value_heads() > 0 ? cfg.num_key_value_heads() : d.heads;
  d.head_dim = head_dim(cfg);
  d.intermediate = cfg.intermediate_size();
  d.vocab = cfg.vocab_size();
  d.layers = cfg.num_hidden_layers();
  d.mtp_depth = cfg.num_nextn_predict_layers();
  d.eps = cfg.rms_norm_eps();
  d.rope_theta = cfg.rope_theta();
  for (int64_t l = 0; l < d.layers + d.mtp_depth; ++l) {
    switch (layer_type(cfg, l)) {
      case config::ModelConfig::MLA:
        d.mixers.push_back(MixerKind::mla);
        break;
      case config::ModelConfig::GATED_DELTANET:
        d.mixers.push_back(MixerKind::gated_deltanet);
        break;
      default:
        d.mixers.push_back(MixerKind::attention);
    }
  }
  const config::MlaConfig& a = cfg.mla();
  d.mla = {a.q_lora_rank(), a.kv_lora_rank(), a.qk_nope_head_dim(), a.qk_rope_head_dim(),
           a.v_head_dim()};
  d.rope_dim = has_layer_type(cfg, config::ModelConfig::ATTENTION) ? rotary_dim(cfg) : d.mla.rope;
  d.output_gate = cfg.attention_output_gate();
  d.qk_norm = cfg.qk_norm();
  d.zero_centered_norms = cfg.zero_centered_norms();
  const config::GatedDeltaNetConfig& g = cfg.linear_attention();
  d.gdn = {g.linear_num_key_heads(), g.linear_key_head_dim(), g.linear_num_value_heads(),
           g.linear_value_head_dim(), g.linear_conv_kernel_dim()};
  const config::RopeScalingConfig& r = cfg.rope_scaling();
  d.yarn = {r.factor(), r.beta_fast(),      r.beta_slow(),
            r.mscale(), r.mscale_all_dim(), r.original_max_position_embeddings()};
  d.rope_style = cfg.rope_style() == config::ModelConfig::INTERLEAVED ? ops::RopeStyle::interleaved
                                                                      : ops::RopeStyle::rotate_half;
  d.tied_head = cfg.tie_word_embeddings();
  const config::MoeConfig& m = cfg.moe();
  d.moe.experts = m.n_routed_experts();
  d.moe.k = m.num_experts_per_tok();
  d.moe.intermediate = m.moe_intermediate_size();
  d.moe.shared = m.n_shared_experts();
  d.moe.first_dense = m.first_k_dense_replace();
  d.moe.n_group = m.n_group();
  d.moe.topk_group = m.topk_group();
  d.moe.scaling = m.routed_scaling_factor();
  d.moe.capacity_factor = m.capacity_factor();
  d.moe.scoring = m.scoring_func() == config::MoeConfig::SOFTMAX ? ops::Scoring::softmax
                                                                 : ops::Scoring::sigmoid;
  d.moe.norm_topk_prob = m.norm_topk_prob();
  d.moe.seq_aux_alpha = m.seq_aux_loss_alpha();
  d.moe.aux_coeff = m.aux_loss_coeff();
  d.moe.z_coeff = m.z_loss_coeff();
  d.moe.bias_update_speed = m.bias_update_speed();
  d.moe.bias_freeze_step = m.bias_freeze_step();
  d.moe.shared_gate = m.shared_expert_gate();
  return d;
}

Model::Model(const config::ModelConfig& cfg, int64_t batch, int64_t seq, const Runtime& rt)
    : Model(model_dims(cfg, batch, seq), rt) {}

}  // namespace moetron
