// Pre-norm transformer block (DeepSeek-V3 layout):
//   h = x + self_attn(input_layernorm(x));  y = h + mlp(post_attention_layernorm(h))
// self_attn is the block's token mixer (models/mixer.h: attention or MLA), mlp its FFN.
// Under tensor parallelism the mixer and FFN return partial sums; the block sums them over
// the group (one all-reduce each way per sublayer, Megatron's g/f operators), so x, h and y and
// their gradients are whole and the same on every rank of the group. Decoding runs the same
// block on one rank over the mixer's decoding state (models/decode_step.h).
#pragma once

#include <memory>
#include <string>

#include "models/feed_forward.h"
#include "models/mixer.h"
#include "models/moe.h"
#include "models/rmsnorm.h"

namespace moetron {

class Block {
 public:
  // prefix names the layer, e.g. "model.layers.3."; mixer is its token mixer; moe picks the MoE
  // FFN over the dense one.
  Block(ParamTable& params, const std::string& prefix, const ModelDims& dims,
        const RopeTables& rope, MixerKind mixer, bool moe, const Runtime& rt);
  // Training: x, y [rows, hidden]. x must stay unchanged until backward.
  void forward(const Tensor& x, Tensor& y) { run(x, y, nullptr); }
  // Decoding: x, y [n, hidden] at positions [step.start, + n), step's state this layer's.
  void forward(const Tensor& x, Tensor& y, const DecodeStep& step) { run(x, y, &step); }
  // dx is overwritten.
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx);
  MoE* moe() const { return moe_; }  // null for a dense block
  const TokenMixer& mixer() const { return *mixer_; }
  TokenMixer& mixer() { return *mixer_; }

 private:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step);
  void sum_over_tp(Tensor& t) const {
    if (tp_comm_) tp_comm_->all_reduce(t);
  }

  RMSNorm input_norm_;
  std::unique_ptr<TokenMixer> mixer_;
  RMSNorm post_attn_norm_;
  std::unique_ptr<FeedForward> mlp_;
  MoE* moe_ = nullptr;
  Communicator* tp_comm_;
  RowBuffer xn_buf_, attn_out_buf_, h_buf_, hn_buf_, mlp_out_buf_;  // on the runtime's device
  Tensor xn_, h_, hn_;  // of the last forward, for backward
  Tensor dh_, dnorm_;   // gradient scratch
};

}  // namespace moetron
