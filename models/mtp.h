// One DeepSeek-V3 multi-token-prediction module (k = 1..D), Hugging Face layer index L + k - 1:
//   x = eh_proj(concat[enorm(embed(t[i+k])), hnorm(h_{k-1})]);  h_k = shared_head.norm(Block(x))
// h_0 is the main model's state after model.norm; h_k, the normed state, is both the shared
// head's input and what module k + 1 receives, as Megatron-Core, SGLang and vLLM's DeepSeek MTP
// chain it (docs/model.md has the evidence).
#pragma once

#include <string>

#include "models/block.h"

namespace moetron {

class MtpModule {
 public:
  // eh_proj and the norms are replicated over tensor-parallel ranks (eh_proj is computed whole
  // on each: it is 2d^2 FLOPs per token); the block splits like any block.
  MtpModule(ParamTable& params, int64_t layer_index, const ModelDims& dims, const RopeTables& rope,
            const Runtime& rt);
  // Training. emb: embeddings of the tokens k ahead; h_prev: h_{k-1}. Both stay unchanged until
  // backward.
  void forward(const Tensor& emb, const Tensor& h_prev) { run(emb, h_prev, head_in_, nullptr); }
  // Decoding (models/decode_step.h): the same for n positions, writing h_k [n, hidden].
  void forward(const Tensor& emb, const Tensor& h_prev, Tensor& h_k, const DecodeStep& step) {
    run(emb, h_prev, h_k, &step);
  }
  // h_k = shared_head.norm(block output): the head's input and module k + 1's h_prev.
  const Tensor& output() const { return head_in_; }
  MoE* moe() const { return block_.moe(); }
  const Block& block() const { return block_; }
  Block& block() { return block_; }
  // d_head_input: gradient at h_k from the head; d_output: gradient at h_k from module k + 1
  // (undefined for the last module). Writes d_emb; adds into d_h_prev.
  void backward(const Tensor& d_head_input, const Tensor& d_output, const Tensor& emb,
                const Tensor& h_prev, Tensor& d_emb, Tensor& d_h_prev);

 private:
  void run(const Tensor& emb, const Tensor& h_prev, Tensor& h_k, const DecodeStep* step);

  const ParamTable& params_;
  RMSNorm enorm_, hnorm_;
  ParamRef eh_proj_;
  Block block_;
  RMSNorm head_norm_;
  RowBuffer emb_n_buf_, h_prev_n_buf_, cat_buf_, x_buf_, h_buf_;
  Tensor emb_n_, h_prev_n_, cat_, x_, h_;                     // of the last forward
  Tensor head_in_;                                            // h_k of training
  Tensor dh_, dx_, dcat_, d_emb_n_, d_h_prev_n_, d_out_sum_;  // gradient scratch
};

}  // namespace moetron
