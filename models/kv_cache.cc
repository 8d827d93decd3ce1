#include "models/kv_cache.h"

namespace moetron {

KvCache::KvCache(const std::vector<std::vector<Shape>>& layer_shapes, int64_t max_len,
                 Device device)
    : max_len_(max_len) {
  for (const std::vector<Shape>& shapes : layer_shapes) {
    std::vector<Tensor>& layer = layers_.emplace_back();
    for (const Shape& s : shapes) layer.push_back(Tensor::empty(s, DType::f32, device));
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
