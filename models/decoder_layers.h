// The layers of the incremental decoder (models/decoder.h): the same math as the training
// layers (models/block.h, attention.h, swiglu.h, moe.h; docs/model.md, docs/moe.md) on a few
// new rows at a time, reading the trained weights by their Hugging Face names and keys/values
// of earlier positions from a KV cache. Forward only; one sequence; one rank. The layers keep
// transposed copies of their weights, made at construction (see DecodeWeight).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/attention.h"
#include "models/dims.h"
#include "models/kv_cache.h"
#include "models/params.h"
#include "models/row_buffer.h"

namespace moetron {

// The parameter `name` of `params`; an Error naming it when the table lacks it.
ParamRef decoder_param(const ParamTable& params, const std::string& name);

// Chunks of up to this many positions (every decoding step and speculative verification) run
// their projections through the fixed-order kernels of core/ops_decode.h, so that a position
// gets the same bits fed alone or in a chunk and greedy speculative decoding reproduces plain
// greedy decoding exactly. Longer chunks (long prompts) take the GEMM; their positions agree with
// the fixed-order ones to fp32 rounding.
inline constexpr int64_t kFixedOrderRows = 64;
// A linear layer's weight w [out, in] (a view into the parameter table) and wt = w^T [in, out],
// the decoder's own copy, made once, for the fixed-order kernel.
struct DecodeWeight {
  Tensor w, wt;
  static DecodeWeight of(const Tensor& w);
};
// y = x w^T by the path above, chosen by `positions` (the rows of the chunk).
void decode_linear(const Tensor& x, const DecodeWeight& w, Tensor& y, int64_t positions);

class DecoderNorm {
 public:
  DecoderNorm(const ParamTable& params, const std::string& name, float eps);
  void forward(const Tensor& x, Tensor& y);

 private:
  ParamRef weight_;
  float eps_;
  RowBuffer rstd_;
};

// Self-attention with RoPE at absolute positions; writes the new keys and values into the
// cache at their positions and attends over every cached position up to each query.
class DecoderAttention {
 public:
  // rope: tables covering the cache's max_len positions.
  DecoderAttention(const ParamTable& params, const std::string& prefix, const ModelDims& dims,
                   const RopeTables& rope);
  // x, y: [n, hidden] at positions [start, start + n); keys_t, values: this layer's cache
  // (models/kv_cache.h), where the new positions are written.
  void forward(const Tensor& x, int64_t start, Tensor& keys_t, Tensor& values, Tensor& y);

 private:
  const RopeTables& rope_;
  int64_t heads_, kv_heads_, head_dim_;
  DecodeWeight qkv_weight_;  // q|k|v, registered adjacently: one product as in training
  DecodeWeight o_weight_;
  RowBuffer qkv_, q_, k_, out_;
};

class DecoderFfn {
 public:
  virtual ~DecoderFfn() = default;
  virtual void forward(const Tensor& x, Tensor& y) = 0;  // x, y: [n, hidden]
};

// down(silu(gate(x)) * up(x)); the dense FFN and the MoE's shared experts.
class DecoderSwiGLU final : public DecoderFfn {
 public:
  DecoderSwiGLU(const ParamTable& params, const std::string& prefix);
  void forward(const Tensor& x, Tensor& y) override;

 private:
  DecodeWeight gate_up_weight_, down_weight_;
  RowBuffer gate_up_, act_;
};

// The MoE FFN as trained (router, biased selection, unbiased gates, groups, shared experts),
// dropless: at inference every token reaches its k experts whatever capacity_factor the model
// was trained with (a capacity is a batch-level training device, and one token has no batch).
class DecoderMoE final : public DecoderFfn {
 public:
  DecoderMoE(const ParamTable& params, const std::string& prefix, const ModelDims& dims);
  void forward(const Tensor& x, Tensor& y) override;

 private:
  ops::RouterConfig router_;
  int64_t hidden_, inter_;
  DecodeWeight gate_weight_;
  Tensor bias_;
  std::vector<Tensor> gate_up_, down_, gate_up_t_, down_t_;  // per expert; _t: transposed
  std::unique_ptr<DecoderSwiGLU> shared_;
  ops::DispatchPlan plan_buffers_;  // for the largest n so far
  Tensor topk_storage_;             // i32 [n, k]
  RowBuffer logits_, scores_, gates_, rows_in_, rows_gate_up_, rows_act_, rows_out_;
};

// Pre-norm block: h = x + attn(input_layernorm(x)); y = h + mlp(post_attention_layernorm(h)).
class DecoderBlock {
 public:
  DecoderBlock(const ParamTable& params, const std::string& prefix, const ModelDims& dims,
               const RopeTables& rope, bool moe);
  // keys_t, values: views of this layer's cache (models/kv_cache.h).
  void forward(const Tensor& x, int64_t start, Tensor keys_t, Tensor values, Tensor& y);

 private:
  DecoderNorm input_norm_, post_attn_norm_;
  DecoderAttention attn_;
  std::unique_ptr<DecoderFfn> mlp_;
  RowBuffer xn_, attn_out_, h_, hn_, mlp_out_;
};

}  // namespace moetron
