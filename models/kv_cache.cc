#include "models/kv_cache.h"

#include "core/ops.h"

namespace moetron {

KvCache::KvCache(const std::vector<Layer>& layers, int64_t max_len, Device device)
    : max_len_(max_len) {
  for (const Layer& l : layers) {
    std::vector<Tensor>& layer = layers_.emplace_back();
    for (const Shape& s : l.shapes) {
      layer.push_back(Tensor::empty(s, DType::f32, device));
      if (!l.recurrent) continue;
      recurrent_.push_back(layer.back());
      saved_.push_back(Tensor::empty(s, DType::f32, device));
    }
  }
  truncate(0);
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
  if (recurrent()) {
    MOETRON_CHECK(length == 0 || length == length_, "KV cache: a recurrent state cannot forget ",
                  "positions ", length, " to ", length_, " (restore() and recompute)");
    if (length == 0)
      for (Tensor& t : recurrent_) ops::fill(t, 0.0f);
  }
  length_ = length;
}

void KvCache::save() {
  for (size_t i = 0; i < recurrent_.size(); ++i) ops::copy(recurrent_[i], saved_[i]);
  saved_length_ = length_;
}

void KvCache::restore() {
  MOETRON_CHECK(saved_length_ <= length_, "KV cache: restore to ", saved_length_, " after ",
                length_);
  for (size_t i = 0; i < recurrent_.size(); ++i) ops::copy(saved_[i], recurrent_[i]);
  length_ = saved_length_;
}

}  // namespace moetron
