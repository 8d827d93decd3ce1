// The decoding state of one stack of layers (the main model's L blocks, or one MTP module's
// block) for one sequence: each layer's tensors, in the shapes its mixer declares
// (TokenMixer::decode_state; attention: keys after RoPE, transposed, [kv_heads, head_dim,
// max_len], so that a query's scores against all positions are contiguous vector work
// (core/ops_decode.h), and values [max_len, kv_heads, head_dim]; MLA: the latent cache
// [max_len, kv_lora_rank + qk_rope_head_dim]). Positions [0, length()) are valid. Speculative
// decoding rolls rejected positions back with truncate(): their entries are simply rewritten.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace moetron {

class KvCache {
 public:
  // layer_shapes[l]: the shapes of layer l's state tensors for max_len positions.
  KvCache(const std::vector<std::vector<Shape>>& layer_shapes, int64_t max_len, Device device);

  int64_t max_len() const { return max_len_; }
  int64_t length() const { return length_; }
  std::span<const Tensor> layer(int64_t l) const { return layers_.at(static_cast<size_t>(l)); }

  // Throws Error when n more positions would not fit.
  void require_room(int64_t n) const;
  // Every layer has written rows [length(), length() + n).
  void advance(int64_t n);
  // Forget the positions from `length` on (length <= length()).
  void truncate(int64_t length);

 private:
  int64_t max_len_, length_ = 0;
  std::vector<std::vector<Tensor>> layers_;
};

}  // namespace moetron
