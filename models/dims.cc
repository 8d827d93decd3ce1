#include "models/dims.h"

namespace moetron {

ModelDims model_dims(const config::ModelConfig& cfg, int64_t batch, int64_t seq) {
  ModelDims d;
  d.batch = batch;
  d.seq = seq;
  d.hidden = cfg.hidden_size();
  d.heads = cfg.num_attention_heads();
  d.kv_heads = cfg.num_key_value_heads() > 0 ? cfg.num_key_value_heads() : d.heads;
  d.head_dim = d.hidden / d.heads;
  d.intermediate = cfg.intermediate_size();
  d.vocab = cfg.vocab_size();
  d.layers = cfg.num_hidden_layers();
  d.mtp_depth = cfg.num_nextn_predict_layers();
  d.eps = cfg.rms_norm_eps();
  d.rope_theta = cfg.rope_theta();
  d.rope_style = cfg.rope_style() == config::ModelConfig::INTERLEAVED ? ops::RopeStyle::interleaved
                                                                      : ops::RopeStyle::rotate_half;
  d.tied_head = cfg.tie_word_embeddings();
  return d;
}

}  // namespace moetron
