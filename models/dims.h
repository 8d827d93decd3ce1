// The sizes every layer is built from, derived once from the model config and the batch shape.
#pragma once

#include <cstdint>

#include "configs/moetron.pb.h"
#include "core/ops.h"
#include "models/parallel_context.h"
#include "models/params.h"

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
};

struct ModelDims {
  int64_t batch = 1, seq = 1;  // micro-batch shape; rows = batch * seq
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int64_t layers = 0, mtp_depth = 0;
  float eps = 1e-6f, rope_theta = 10000.0f;
  ops::RopeStyle rope_style = ops::RopeStyle::rotate_half;
  bool tied_head = false;
  MoeDims moe;

  // This rank's share (docs/parallelism.md): tp splits heads, KV heads, the dense and shared-
  // expert FFN widths, the (padded) vocabulary and, in MoE layers, the dispatched tokens; ep
  // splits the routed experts.
  int64_t tp = 1, tp_rank = 0, ep = 1, ep_rank = 0;

  int64_t rows() const { return batch * seq; }
  int64_t local_heads() const { return heads / tp; }
  int64_t local_kv_heads() const { return kv_heads / tp; }
  int64_t local_intermediate() const { return intermediate / tp; }
  int64_t padded_vocab() const { return (vocab + tp - 1) / tp * tp; }
  int64_t local_vocab() const { return padded_vocab() / tp; }
  int64_t local_experts() const { return moe.experts / ep; }
  int64_t first_local_expert() const { return ep_rank * local_experts(); }
  // Tokens whose routed experts this rank dispatches in MoE layers: rows [begin, end).
  int64_t token_slice_begin() const { return rows() / tp * tp_rank; }
  int64_t token_slice_end() const { return rows() / tp * (tp_rank + 1); }
  // The tensor-parallel block of a [local * tp] extent along `dim`.
  ShardSpec tp_shard(int dim, int64_t local, int64_t global) const {
    return ShardSpec::tensor(dim, local * tp_rank, global);
  }
  // Tokens one sample draws: T inputs, their next tokens, and D more for the MTP modules.
  int64_t window() const { return seq + 1 + mtp_depth; }
  // Whether layer `index` (Hugging Face numbering; MTP blocks follow the main ones) is MoE.
  bool is_moe_layer(int64_t index) const { return moe.experts > 0 && index >= moe.first_dense; }
};

// The sizes of `cfg` at this micro-batch shape, for this rank of `ctx`. The layout must have
// been validated (parallel/layout.h): a size that does not divide is an internal error here.
ModelDims model_dims(const config::ModelConfig& cfg, int64_t batch, int64_t seq,
                     const ParallelContext& ctx = {});

}  // namespace moetron
