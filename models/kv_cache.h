// Keys and values of the positions a decoder has processed, for each attention layer of one
// stack (the main model's L blocks, or one MTP module's block), keys after RoPE, as attention
// reads them: values [max_len, kv_heads, head_dim], keys transposed, [kv_heads, head_dim,
// max_len], so that a query's scores against all positions are contiguous vector work
// (core/ops_decode.h). Positions [0, length()) are valid. Speculative decoding rolls rejected
// positions back with truncate(): their entries are simply rewritten.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moetron {

class KvCache {
 public:
  KvCache(int64_t layers, int64_t max_len, int64_t kv_heads, int64_t head_dim, Device device);

  int64_t max_len() const { return max_len_; }
  int64_t length() const { return length_; }
  Tensor keys_t(int64_t layer) const { return keys_.at(static_cast<size_t>(layer)); }
  Tensor values(int64_t layer) const { return values_.at(static_cast<size_t>(layer)); }

  // Throws Error when n more positions would not fit.
  void require_room(int64_t n) const;
  // Every layer has written rows [length(), length() + n).
  void advance(int64_t n);
  // Forget the positions from `length` on (length <= length()).
  void truncate(int64_t length);

 private:
  int64_t max_len_, length_ = 0;
  std::vector<Tensor> keys_, values_;
};

}  // namespace moetron
