#include "models/decoder.h"

#include "core/ops.h"

namespace moetron {
namespace {

int64_t checked_max_len(int64_t max_len) {
  if (max_len < 1) throw Error(detail::concat("decoder: max_len ", max_len, " must be positive"));
  return max_len;
}

}  // namespace

Decoder::Decoder(Model& model, int64_t max_len)
    : model_(model),
      max_len_(checked_max_len(max_len)),
      rope_(RopeTables::make(model.dims(), max_len_, model.runtime().device)),
      cache_(
          [&] {
            std::vector<KvCache::Layer> layers;
            for (int64_t l = 0; l < model.dims().layers; ++l) {
              const TokenMixer& m = model.block(l).mixer();
              layers.push_back({m.decode_state(max_len_), m.recurrent()});
            }
            return layers;
          }(),
          max_len_, model.runtime().device) {
  const ModelDims& d = model.dims();
  const Runtime& rt = model.runtime();
  // Decoding multiplies by the fp32 weights (generate builds its model in fp32).
  if (rt.compute != DType::f32)
    throw Error("decoder: decodes in fp32, and the model was built for bf16 GEMMs");
  if (!rt.alone())
    throw Error(detail::concat("decoder: decodes on one rank, and the model is split over tp ",
                               rt.tp.size, " x ep ", rt.ep.size, " ranks"));
  for (int64_t k = 1; k <= d.mtp_depth; ++k) {
    const TokenMixer& m = model.mtp(k).block().mixer();
    mtp_caches_.emplace_back(std::vector<KvCache::Layer>{{m.decode_state(max_len_), m.recurrent()}},
                             max_len_, rt.device);
  }
  last_tokens_.resize(static_cast<size_t>(d.mtp_depth) + 1);
  for (int64_t k = 0; k <= d.mtp_depth; ++k) states_.push_back(rt.empty({max_len, d.hidden}));
}

void Decoder::reset() {
  cache_.truncate(0);
  for (KvCache& c : mtp_caches_) c.truncate(0);
}

DecodeStep Decoder::step(int64_t start, int64_t n, const KvCache& cache) {
  return {weights_, n <= kFixedOrderRows, start, rope_, cache.layer(0)};
}

Tensor Decoder::embed(std::span<const int32_t> tokens, RowBuffer& out) {
  Tensor x = out.rows(static_cast<int64_t>(tokens.size()), dims().hidden);
  model_.embedding().forward(ops::from_host(tokens, x.device()), x);
  return x;
}

Tensor Decoder::head(const Tensor& h, const DecodeStep& step, RowBuffer& out) {
  Tensor logits = out.rows(h.rows(), dims().vocab);
  linear_forward(h, model_.head_weight().value(), logits, &step);
  return logits;
}

Tensor Decoder::forward(std::span<const int32_t> tokens) {
  const auto n = static_cast<int64_t>(tokens.size());
  MOETRON_CHECK(n > 0, "decoder: no tokens");
  cache_.require_room(n);
  const int64_t start = length();
  if (cache_.recurrent()) {
    cache_.save();
    last_tokens_[0].assign(tokens.begin(), tokens.end());
  }
  const DecodeStep s = step(start, n, cache_);
  Tensor x = embed(tokens, x_a_), y = x_b_.rows(n, dims().hidden);
  for (int64_t l = 0; l < dims().layers; ++l) {
    model_.block(l).forward(x, y, s.with_state(cache_.layer(l)));
    std::swap(x, y);
  }
  Tensor h0 = states_[0].slice(start, start + n);
  model_.final_norm().forward(x, h0);
  cache_.advance(n);
  return head(h0, s, logits_);
}

Tensor Decoder::mtp_forward(int64_t k, std::span<const int32_t> tokens) {
  MOETRON_CHECK(k >= 1 && k <= mtp_depth(), "decoder: MTP module ", k, " of ", mtp_depth());
  KvCache& cache = mtp_caches_[static_cast<size_t>(k - 1)];
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache.length();
  MOETRON_CHECK(n > 0 && start + n <= states_valid(k - 1), "decoder: MTP module ", k,
                " at positions [", start, ", ", start + n,
                ") before its input stage reached them (", states_valid(k - 1), ")");
  cache.require_room(n);
  if (cache.recurrent()) {
    cache.save();
    last_tokens_[static_cast<size_t>(k)].assign(tokens.begin(), tokens.end());
  }
  const DecodeStep s = step(start, n, cache);
  // h_k = shared_head.norm(block output) is both the head's input and what module k + 1
  // receives, as training chains them (MtpModule::output() in models/mtp.h).
  Tensor h_k = states_[static_cast<size_t>(k)].slice(start, start + n);
  model_.mtp(k).forward(embed(tokens, emb_),
                        states_[static_cast<size_t>(k - 1)].slice(start, start + n), h_k, s);
  cache.advance(n);
  return head(h_k, s, mtp_logits_);
}

void Decoder::roll_back(KvCache& cache, int64_t length, const std::vector<int32_t>& tokens,
                        const std::function<void(std::span<const int32_t>)>& refeed) {
  if (!cache.recurrent() || length == cache.length() || length == 0) {
    cache.truncate(length);
    return;
  }
  const int64_t saved = cache.saved_length();
  MOETRON_CHECK(length >= saved && length <= cache.length(), "decoder: rolling a recurrent state ",
                "back to ", length, ", before its latest forward started (", saved, ")");
  cache.restore();
  // A copy: feeding again records these tokens as the latest forward's.
  const std::vector<int32_t> kept(tokens.begin(), tokens.begin() + (length - saved));
  if (!kept.empty()) refeed(kept);
}

void Decoder::truncate(int64_t length) {
  roll_back(cache_, length, last_tokens_[0], [&](std::span<const int32_t> t) { forward(t); });
}

void Decoder::mtp_truncate(int64_t k, int64_t length) {
  MOETRON_CHECK(k >= 1 && k <= mtp_depth(), "decoder: MTP module ", k, " of ", mtp_depth());
  roll_back(mtp_caches_[static_cast<size_t>(k - 1)], length, last_tokens_[static_cast<size_t>(k)],
            [&](std::span<const int32_t> t) { mtp_forward(k, t); });
}

}  // namespace moetron
