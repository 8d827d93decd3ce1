// Incremental decoding of a trained model (docs/generate.md): the main model and its D MTP
// modules fed a few tokens at a time, each stack with its own KV cache, over the weights of a
// ParamTable (a Model's, e.g. loaded from a checkpoint). The math is the training forward pass
// (docs/model.md) position by position: logits of positions fed one at a time, in chunks or
// all at once agree with Model::logits to fp32 rounding (tests/generate/).
//
// Positions are absolute (RoPE angle = position), counted from the first token fed after
// reset(). One sequence at a time; one rank.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/decoder_layers.h"

namespace moetron {

class Decoder {
 public:
  // params: every tensor of `cfg`'s model under its Hugging Face name; read, never written, and
  // it must outlive the decoder (which also copies the matrices, transposed, at construction).
  // max_len: the most positions a sequence may reach (prompt, generated tokens and speculative
  // lookahead together).
  Decoder(const config::ModelConfig& cfg, const ParamTable& params, int64_t max_len);

  const ModelDims& dims() const { return dims_; }
  int64_t max_len() const { return max_len_; }
  int64_t mtp_depth() const { return dims_.mtp_depth; }
  // Forget the sequence: every cache back to length 0.
  void reset();

  // Main model: feeds `tokens` at positions [length(), length() + n) and returns their
  // next-token logits [n, vocab] (a buffer valid until the next forward()). Keeps the positions'
  // final-normed states h_0, the first MTP module's input.
  Tensor forward(std::span<const int32_t> tokens);
  int64_t length() const { return cache_.length(); }
  // Forget positions from `length` on (rejected speculative tokens).
  void truncate(int64_t length) { cache_.truncate(length); }

  // MTP module k = 1..D (docs/model.md) at positions [mtp_length(k), + n): `tokens` are the
  // tokens k ahead of those positions (t[i + k]); the previous stage (the main model for k = 1,
  // module k - 1 otherwise) must already have run on them. Returns the module's logits for
  // t[i + k + 1], [n, vocab] (valid until the next mtp_forward()).
  Tensor mtp_forward(int64_t k, std::span<const int32_t> tokens);
  int64_t mtp_length(int64_t k) const {
    return mtp_.at(static_cast<size_t>(k - 1))->cache.length();
  }
  void mtp_truncate(int64_t k, int64_t length) {
    mtp_.at(static_cast<size_t>(k - 1))->cache.truncate(length);
  }

 private:
  struct MtpStage {
    MtpStage(const ParamTable& params, int64_t layer, const ModelDims& dims, const RopeTables& rope,
             int64_t max_len);
    DecoderNorm enorm, hnorm, head_norm;
    DecodeWeight eh_proj;
    DecoderBlock block;
    KvCache cache;
  };

  Tensor head(const Tensor& h, RowBuffer& out);  // h [n, hidden] -> logits [n, vocab]
  // Positions through which stage k's states (h_k; k = 0: the main model) are valid.
  int64_t states_valid(int64_t k) const { return k == 0 ? length() : mtp_length(k); }

  ModelDims dims_;
  int64_t max_len_;
  RopeTables rope_;
  Tensor embed_;
  DecodeWeight head_;
  std::vector<std::unique_ptr<DecoderBlock>> blocks_;
  DecoderNorm final_norm_;
  KvCache cache_;
  std::vector<std::unique_ptr<MtpStage>> mtp_;
  // states_[k] [max_len, hidden]: h_k of every position stage k has run on, read by stage k+1.
  std::vector<Tensor> states_;
  RowBuffer x_a_, x_b_, emb_, emb_n_, prev_n_, cat_;
  RowBuffer logits_, mtp_logits_;  // apart: a draft step does not overwrite the main logits
};

}  // namespace moetron
