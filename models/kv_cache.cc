#include "models/kv_cache.h"

namespace moetron {

KvCache::KvCache(int64_t layers, int64_t max_len, int64_t kv_heads, int64_t head_dim, Device device)
    : max_len_(max_len) {
  for (int64_t l = 0; l < layers; ++l) {
    keys_.push_back(Tensor::empty({kv_heads, head_dim, max_len}, DType::f32, device));
    values_.push_back(Tensor::empty({max_len, kv_heads, head_dim}, DType::f32, device));
  }
}

void KvCache::require_room(int64_t n) const {
  if (length_ + n > max_len_)
    throw Error(detail::concat("KV cache full: ", length_, " positions + ", n, " new exceed its ",
                               max_len_, " (raise the decoder's max_len)"));
}

void KvCache::advance(int64_t n) {
  require_room(n);
  length_ += n;
}

void KvCache::truncate(int64_t length) {
  MOETRON_CHECK(length >= 0 && length <= length_, "KV cache: truncate to ", length, " of ",
                length_);
  length_ = length;
}

}  // namespace moetron
