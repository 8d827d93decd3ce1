// The sizes every layer is built from, derived once from the model config and the batch shape
// (models/model_config.h: the only part of models/ that knows the Protobuf config).
#pragma once

#include <cstdint>
#include <vector>

#include "core/ops.h"
#include "models/runtime.h"

namespace moetron {

// The MoE FFN's sizes and routing settings (docs/moe.md); experts == 0 means a dense model.
struct MoeDims {
  int64_t experts = 0, k = 1, intermediate = 0, shared = 0, first_dense = 0;
  int64_t n_group = 1, topk_group = 1;
  float scaling = 1.0f, capacity_factor = 0.0f;
  ops::Scoring scoring = ops::Scoring::sigmoid;
  bool norm_topk_prob = true;
  float seq_aux_alpha = 0.0f, aux_coeff = 0.0f, z_coeff = 0.0f;
  float bias_update_speed = 0.0f;
  int64_t bias_freeze_step = 0;
  bool shared_gate = false;  // the shared experts' output times sigmoid(x . w) (Qwen)
};

// The token mixer of a block (models/mixer.h).
enum class MixerKind { attention, mla, gated_deltanet };

// Multi-head latent attention's widths (models/mla.h); q_lora == 0: a plain q_proj.
struct MlaDims {
  int64_t q_lora = 0, kv_lora = 0, nope = 0, rope = 0, v = 0;
  int64_t qk() const { return nope + rope; }  // a query's and a key's width
};

// Gated DeltaNet's sizes (models/gated_deltanet.h): key heads of k_dim, value heads of v_dim (a
// multiple of the key heads), conv taps.
struct GatedDeltaNetDims {
  int64_t k_heads = 0, k_dim = 0, v_heads = 0, v_dim = 0, conv = 0;
  int64_t conv_dim() const { return 2 * k_heads * k_dim + v_heads * v_dim; }  // [q | k | v]
};

// YaRN RoPE scaling (models/rope.h); factor 1 = none.
struct YarnDims {
  float factor = 1.0f, beta_fast = 32.0f, beta_slow = 1.0f, mscale = 1.0f, mscale_all_dim = 0.0f;
  int64_t original = 0;  // original_max_position_embeddings
};

struct ModelDims {
  int64_t batch = 1, seq = 1;  // micro-batch shape; rows = batch * seq
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int64_t layers = 0, mtp_depth = 0;
  float eps = 1e-6f, rope_theta = 10000.0f;
  // The width RoPE rotates: head_dim * partial_rotary_factor, or MLA's qk_rope_head_dim.
  int64_t rope_dim = 0;
  bool output_gate = false, qk_norm = false;  // ATTENTION's options (models/attention.h)
  bool zero_centered_norms = false;           // norm weights stored as offsets from 1
  ops::RopeStyle rope_style = ops::RopeStyle::rotate_half;
  YarnDims yarn;
  std::vector<MixerKind> mixers;  // of each block: the L main ones, then the D MTP ones
  MlaDims mla;
  GatedDeltaNetDims gdn;
  bool tied_head = false;
  MoeDims moe;

  int64_t rows() const { return batch * seq; }
  // Tokens one sample draws: T inputs, their next tokens, and D more for the MTP modules.
  int64_t window() const { return seq + 1 + mtp_depth; }
  // Whether layer `index` (Hugging Face numbering; MTP blocks follow the main ones) is MoE.
  bool is_moe_layer(int64_t index) const { return moe.experts > 0 && index >= moe.first_dense; }
  MixerKind mixer(int64_t index) const { return mixers.at(static_cast<size_t>(index)); }
};

// That `rt`'s groups split `d` as the layers need (docs/parallelism.md): tp divides the heads,
// KV heads, FFN widths and, in MoE layers, the tokens; ep the routed experts. The layout must
// have been validated (parallel/layout.h): a size that does not divide is an internal error.
void check_split(const ModelDims& d, const Runtime& rt);

}  // namespace moetron
