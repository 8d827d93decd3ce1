// Incremental decoding of a trained model (docs/generate.md): the main model and its D MTP
// modules fed a few tokens at a time, each stack with its own KV cache. The decoder runs the
// model's own layers (models/decode_step.h: one implementation of each layer for training and
// decoding), so logits of positions fed one at a time, in chunks or all at once agree with
// Model::logits to fp32 rounding (tests/generate/).
//
// Positions are absolute (RoPE angle = position), counted from the first token fed after
// reset(). One sequence at a time; one rank.
//
// Rolling back (truncate, mtp_truncate) is free for per-position caches. A stack with a
// recurrent mixer (Gated DeltaNet) keeps its recurrent state from before its latest forward and
// rolls back by restoring it and feeding again the kept part of that forward's tokens: a roll
// back reaches at most to the start of the latest forward of its stack, and the kept positions
// get the same bits again (fixed-order kernels, token by token recurrence).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/decode_step.h"
#include "models/kv_cache.h"
#include "models/model.h"
#include "models/row_buffer.h"

namespace moetron {

class Decoder {
 public:
  // model: a model of one rank whose weights do not change while the decoder is used (it keeps
  // transposed copies of the matrices) and which outlives it. Decoding reuses the layers'
  // activation buffers, so it must not run between a training forward and its backward; a
  // Model(cfg, 1, 1) suffices. max_len: the most positions a sequence may reach
  // (prompt, generated tokens and speculative lookahead together).
  Decoder(Model& model, int64_t max_len);
  Decoder(const Decoder&) = delete;  // a copy would share the caches
  Decoder& operator=(const Decoder&) = delete;

  const ModelDims& dims() const { return model_.dims(); }
  int64_t max_len() const { return max_len_; }
  int64_t mtp_depth() const { return dims().mtp_depth; }
  // Forget the sequence: every cache back to length 0.
  void reset();

  // Main model: feeds `tokens` at positions [length(), length() + n) and returns their
  // next-token logits [n, vocab] (a buffer valid until the next forward()). Keeps the positions'
  // final-normed states h_0, the first MTP module's input.
  Tensor forward(std::span<const int32_t> tokens);
  int64_t length() const { return cache_.length(); }
  // Forget positions from `length` on (rejected speculative tokens). Invalidates the logits of
  // the latest forward() when the model has a recurrent mixer.
  void truncate(int64_t length);

  // MTP module k = 1..D (docs/model.md) at positions [mtp_length(k), + n): `tokens` are the
  // tokens k ahead of those positions (t[i + k]); the previous stage (the main model for k = 1,
  // module k - 1 otherwise) must already have run on them. Returns the module's logits for
  // t[i + k + 1], [n, vocab] (valid until the next mtp_forward()).
  Tensor mtp_forward(int64_t k, std::span<const int32_t> tokens);
  int64_t mtp_length(int64_t k) const {
    return mtp_caches_.at(static_cast<size_t>(k - 1)).length();
  }
  // The same for module k (invalidates its latest logits with a recurrent mixer).
  void mtp_truncate(int64_t k, int64_t length);

 private:
  // The step of n positions from `start`, over layer 0 of `cache`.
  DecodeStep step(int64_t start, int64_t n, const KvCache& cache);
  Tensor embed(std::span<const int32_t> tokens, RowBuffer& out);
  Tensor head(const Tensor& h, const DecodeStep& step, RowBuffer& out);
  // Positions through which stage k's states (h_k; k = 0: the main model) are valid.
  int64_t states_valid(int64_t k) const { return k == 0 ? length() : mtp_length(k); }
  // Rolls `cache` back to `length`; a recurrent one restores its saved state and feeds again
  // tokens[0, length - saved) through `refeed`.
  void roll_back(KvCache& cache, int64_t length, const std::vector<int32_t>& tokens,
                 const std::function<void(std::span<const int32_t>)>& refeed);

  Model& model_;
  int64_t max_len_;
  RopeTables rope_;  // a row per position up to max_len
  TransposedWeights weights_;
  KvCache cache_;
  std::vector<KvCache> mtp_caches_;  // one layer each
  // The tokens of each stack's latest forward (index 0: the main model), for recomputing.
  std::vector<std::vector<int32_t>> last_tokens_;
  // states_[k] [max_len, hidden]: h_k of every position stage k has run on, read by stage k+1.
  std::vector<Tensor> states_;
  RowBuffer x_a_{DType::f32, model_.runtime().device}, x_b_{DType::f32, model_.runtime().device};
  RowBuffer emb_{DType::f32, model_.runtime().device};
  // Apart: a draft step does not overwrite the main logits.
  RowBuffer logits_{DType::f32, model_.runtime().device};
  RowBuffer mtp_logits_{DType::f32, model_.runtime().device};
};

}  // namespace moetron
