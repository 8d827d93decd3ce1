#include "models/decoder.h"

#include <array>
#include <string>

#include "core/ops.h"

namespace moetron {
namespace {

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

}  // namespace

Decoder::MtpStage::MtpStage(const ParamTable& params, int64_t layer, const ModelDims& d,
                            const RopeTables& rope, int64_t max_len)
    : enorm(params, layer_prefix(layer) + "enorm.weight", d.eps),
      hnorm(params, layer_prefix(layer) + "hnorm.weight", d.eps),
      head_norm(params, layer_prefix(layer) + "shared_head.norm.weight", d.eps),
      eh_proj(
          DecodeWeight::of(decoder_param(params, layer_prefix(layer) + "eh_proj.weight").value())),
      block(params, layer_prefix(layer), d, rope, d.is_moe_layer(layer)),
      cache(1, max_len, d.kv_heads, d.head_dim) {}

Decoder::Decoder(const config::ModelConfig& cfg, const ParamTable& params, int64_t max_len)
    : dims_(model_dims(cfg, 1, max_len)),
      max_len_(max_len),
      rope_(RopeTables::make(dims_)),  // dims_.seq = max_len: a row per position
      embed_(decoder_param(params, "model.embed_tokens.weight").value()),
      head_(DecodeWeight::of(dims_.tied_head ? embed_
                                             : decoder_param(params, "lm_head.weight").value())),
      final_norm_(params, "model.norm.weight", dims_.eps),
      cache_(dims_.layers, max_len, dims_.kv_heads, dims_.head_dim) {
  if (max_len < 1) throw Error(detail::concat("decoder: max_len ", max_len, " must be positive"));
  for (int64_t l = 0; l < dims_.layers; ++l)
    blocks_.push_back(std::make_unique<DecoderBlock>(params, layer_prefix(l), dims_, rope_,
                                                     dims_.is_moe_layer(l)));
  for (int64_t k = 1; k <= dims_.mtp_depth; ++k)
    mtp_.push_back(std::make_unique<MtpStage>(params, dims_.layers + k - 1, dims_, rope_, max_len));
  for (int64_t k = 0; k <= dims_.mtp_depth; ++k)
    states_.push_back(Tensor::empty({max_len, dims_.hidden}));
}

void Decoder::reset() {
  cache_.truncate(0);
  for (auto& m : mtp_) m->cache.truncate(0);
}

Tensor Decoder::head(const Tensor& h, RowBuffer& out) {
  Tensor logits = out.rows(h.rows(), dims_.vocab);
  decode_linear(h, head_, logits, h.rows());
  return logits;
}

Tensor Decoder::forward(std::span<const int32_t> tokens) {
  const auto n = static_cast<int64_t>(tokens.size());
  MOETRON_CHECK(n > 0, "decoder: no tokens");
  cache_.require_room(n);
  const int64_t start = length();
  Tensor x = x_a_.rows(n, dims_.hidden), y = x_b_.rows(n, dims_.hidden);
  ops::embedding_forward(ops::from_host(tokens, embed_.device()), embed_, x);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    blocks_[l]->forward(x, start, cache_.keys_t(static_cast<int64_t>(l)),
                        cache_.values(static_cast<int64_t>(l)), y);
    std::swap(x, y);
  }
  Tensor h0 = states_[0].slice(start, start + n);
  final_norm_.forward(x, h0);
  cache_.advance(n);
  return head(h0, logits_);
}

Tensor Decoder::mtp_forward(int64_t k, std::span<const int32_t> tokens) {
  MOETRON_CHECK(k >= 1 && k <= dims_.mtp_depth, "decoder: MTP module ", k, " of ", dims_.mtp_depth);
  MtpStage& m = *mtp_[static_cast<size_t>(k - 1)];
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t start = m.cache.length();
  MOETRON_CHECK(n > 0 && start + n <= states_valid(k - 1), "decoder: MTP module ", k,
                " at positions [", start, ", ", start + n,
                ") before its input stage reached them (", states_valid(k - 1), ")");
  m.cache.require_room(n);
  const int64_t d = dims_.hidden;
  // x = eh_proj(concat[enorm(embed(t[i + k])), hnorm(h_{k-1}[i])]), embedding first.
  Tensor emb = emb_.rows(n, d), emb_n = emb_n_.rows(n, d), prev_n = prev_n_.rows(n, d);
  ops::embedding_forward(ops::from_host(tokens, embed_.device()), embed_, emb);
  m.enorm.forward(emb, emb_n);
  m.hnorm.forward(states_[static_cast<size_t>(k - 1)].slice(start, start + n), prev_n);
  Tensor cat = cat_.rows(n, 2 * d);
  const std::array<Tensor, 2> parts{emb_n, prev_n};
  ops::concat_cols(parts, cat);
  Tensor x = x_a_.rows(n, d), h = x_b_.rows(n, d);
  decode_linear(cat, m.eh_proj, x, n);
  m.block.forward(x, start, m.cache.keys_t(0), m.cache.values(0), h);
  // h_k = shared_head.norm(block output) is both the head's input and what module k + 1
  // receives, as training chains them (MtpModule::output() in models/mtp.h).
  Tensor h_k = states_[static_cast<size_t>(k)].slice(start, start + n);
  m.head_norm.forward(h, h_k);
  m.cache.advance(n);
  return head(h_k, mtp_logits_);
}

}  // namespace moetron
