// The decoding state of one stack of layers (the main model's L blocks, or one MTP module's
// block) for one sequence: each layer's tensors, in the shapes its mixer declares
// (TokenMixer::decode_state; attention: keys after RoPE, transposed, [kv_heads, head_dim,
// max_len], so that a query's scores against all positions are contiguous vector work
// (core/ops_decode.h), and values [max_len, kv_heads, head_dim]; MLA: the latent cache
// [max_len, kv_lora_rank + qk_rope_head_dim]; Gated DeltaNet: its conv window and recurrent
// state). Positions [0, length()) are valid.
//
// Speculative decoding rolls rejected positions back. A per-position cache forgets them by
// truncate() (their entries are simply rewritten); a recurrent state has folded them in, so a
// stack with one keeps a copy of its recurrent layers' state from before the latest step
// (save()), and rolling back means restore() and recomputing the kept positions
// (models/decoder.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace moetron {

class KvCache {
 public:
  // One layer's state: the shapes of its tensors for max_len positions, and whether it is
  // recurrent (TokenMixer::recurrent).
  struct Layer {
    std::vector<Shape> shapes;
    bool recurrent = false;
  };
  KvCache(const std::vector<Layer>& layers, int64_t max_len, Device device);

  int64_t max_len() const { return max_len_; }
  int64_t length() const { return length_; }
  std::span<const Tensor> layer(int64_t l) const { return layers_.at(static_cast<size_t>(l)); }
  bool recurrent() const { return !saved_.empty(); }

  // Throws Error when n more positions would not fit.
  void require_room(int64_t n) const;
  // Every layer has written rows [length(), length() + n).
  void advance(int64_t n);
  // Forget the positions from `length` on (length <= length()). With a recurrent layer only
  // to 0 (the state starts again from zero) or to length() (nothing to forget).
  void truncate(int64_t length);
  // Recurrent layers: keep a copy of their state at length(), and go back to it.
  void save();
  int64_t saved_length() const { return saved_length_; }
  void restore();

 private:
  int64_t max_len_, length_ = 0, saved_length_ = 0;
  std::vector<std::vector<Tensor>> layers_;
  // The recurrent layers' tensors (views into layers_) and their copies.
  std::vector<Tensor> recurrent_, saved_;
};

}  // namespace moetron
