#include "models/model.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "core/ops.h"
#include "core/ops_linear_attention.h"

namespace moetron {
namespace {

ParamRef make_head_weight(ParamTable& params, const ModelDims& d, const Runtime& rt,
                          const Embedding& embed) {
  if (d.tied_head) return embed.table();
  const int64_t local = rt.tp.padded_share(d.vocab);
  return params.add("lm_head.weight", {local, d.hidden}, ParamKind::matrix,
                    rt.tp.shard(0, local, d.vocab));
}

ModelDims split_dims(const ModelDims& dims, const Runtime& rt) {
  check_split(dims, rt);
  return dims;
}

// The layer index N of a "model.layers.N." name, or -1.
int64_t layer_of(const std::string& name) {
  constexpr std::string_view prefix = "model.layers.";
  if (!name.starts_with(prefix)) return -1;
  return std::stoll(name.substr(prefix.size()));
}

}  // namespace

Model::Model(const ModelDims& dims, const Runtime& rt)
    : rt_(rt),
      dims_(split_dims(dims, rt)),
      rope_(RopeTables::make(dims_, dims_.seq, rt.device)),
      embed_(params_, dims_, rt),
      blocks_([&] {
        std::vector<std::unique_ptr<Block>> blocks;
        for (int64_t l = 0; l < dims_.layers; ++l)
          blocks.push_back(
              std::make_unique<Block>(params_, "model.layers." + std::to_string(l) + ".", dims_,
                                      rope_, dims_.mixer(l), dims_.is_moe_layer(l), rt));
        return blocks;
      }()),
      final_norm_(params_, "model.norm.weight", dims_.hidden, dims_.eps, rt,
                  dims_.zero_centered_norms),
      head_weight_(make_head_weight(params_, dims_, rt, embed_)),
      mtp_([&] {
        std::vector<std::unique_ptr<MtpModule>> mtp;
        for (int64_t k = 0; k < dims_.mtp_depth; ++k)
          mtp.push_back(std::make_unique<MtpModule>(params_, dims_.layers + k, dims_, rope_, rt));
        return mtp;
      }()),
      head_(head_weight_, embed_.shard(), dims_, rt) {
  params_.allocate([this](const ParamInfo& p) { return unit_of(p); }, rt.device, rt.compute);
  for (const auto& b : blocks_)
    if (b->moe()) moe_layers_.push_back(b->moe());
  for (const auto& m : mtp_)
    if (m->moe()) moe_layers_.push_back(m->moe());
  begin_step();
  const int64_t rows = dims_.rows();
  const Shape act{rows, dims_.hidden};
  staged_.assign(static_cast<size_t>(2 * (dims_.mtp_depth + 1) * rows), 0);
  for (int64_t k = 0; k <= dims_.mtp_depth; ++k) {
    ids_.push_back(rt_.empty({rows}, DType::i32));
    targets_.push_back(rt_.empty({rows}, DType::i32));
  }
  for (int64_t l = 0; l <= dims_.layers; ++l) x_.push_back(rt_.empty(act));
  for (Tensor* t : {&h0_, &dh0_, &dx_a_, &dx_b_}) *t = rt_.empty(act);
  for (int64_t k = 0; k < dims_.mtp_depth; ++k) {
    emb_.push_back(rt_.empty(act));
    d_head_in_.push_back(rt_.empty(act));
    d_emb_.push_back(rt_.empty(act));
    d_prev_.push_back(rt_.empty(act));
  }
}

int Model::unit_of(const ParamInfo& p) const {
  const int64_t layer = layer_of(p.name);
  if (layer >= dims_.layers) return static_cast<int>(dims_.mtp_depth - 1 - (layer - dims_.layers));
  if (layer >= 0) return block_unit(layer);
  if (p.name == "model.embed_tokens.weight") return embedding_unit();
  return head_unit();  // model.norm.weight, lm_head.weight
}

void Model::gather_tokens(std::span<const int32_t> windows) {
  const int64_t w = dims_.window();
  if (static_cast<int64_t>(windows.size()) != dims_.batch * w)
    throw Error(detail::concat("model expects ", dims_.batch, " windows of ", w, " tokens, got ",
                               windows.size(), " tokens"));
  const int64_t rows = dims_.rows();
  for (int64_t k = 0; k <= dims_.mtp_depth; ++k) {
    int32_t* ids = staged_.data() + 2 * k * rows;
    int32_t* targets = ids + rows;
    for (int64_t b = 0; b < dims_.batch; ++b)
      for (int64_t t = 0; t < dims_.seq; ++t) {
        ids[b * dims_.seq + t] = windows[b * w + t + k];
        targets[b * dims_.seq + t] = windows[b * w + t + k + 1];
      }
    ops::copy_from_host(std::span<const int32_t>(ids, static_cast<size_t>(rows)), ids_[k]);
    ops::copy_from_host(std::span<const int32_t>(targets, static_cast<size_t>(rows)), targets_[k]);
  }
}

Tensor Model::new_sums() const {
  return Tensor::zeros({sums_size()}, DType::f64, rt_.device);
}

int64_t Model::sums_size() const {
  return outside_sum() + 1;
}

Losses Model::losses(std::span<const double> sums, int64_t passes, float mtp_weight) const {
  MOETRON_CHECK(static_cast<int64_t>(sums.size()) == sums_size() && passes > 0, sums.size(),
                " sums of ", passes, " passes for a model of ", sums_size());
  if (const double outside = sums[static_cast<size_t>(outside_sum())]; outside != 0)
    throw Error(detail::concat(
        "the batch holds token ids outside the vocabulary [0, ", dims_.vocab, ") of the model (",
        outside,
        " reads of them, counted once per head that reads the token as input or "
        "target): the data holds ids that model.vocab_size = ",
        dims_.vocab, " does not cover (tokenized for a larger vocabulary, or corrupt)"));
  const int64_t depth = dims_.mtp_depth;
  const double rows = static_cast<double>(dims_.rows() * passes);
  Losses l;
  l.main = sums[0] / rows;
  for (int64_t k = 1; k <= depth; ++k) l.mtp.push_back(sums[static_cast<size_t>(k)] / rows);
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    const double* b = sums.data() + moe_sums(i);
    l.aux += (b[ops::kSeqAux] + b[ops::kAux] + b[ops::kZ]) / static_cast<double>(passes);
  }
  const double mtp_scale = depth > 0 ? mtp_weight / static_cast<double>(depth) : 0.0;
  l.total = l.main + l.aux;
  for (double ce : l.mtp) l.total += mtp_scale * ce;
  return l;
}

void Model::run(std::span<const int32_t> windows, float mtp_weight, bool backward, float grad_scale,
                Tensor& sums, const GradReadyHook& on_ready) {
  MOETRON_CHECK(sums.dtype() == DType::f64 && sums.numel() == sums_size(), "model sums ",
                shape_str(sums.shape()), " for ", sums_size());
  auto ready = [&](int unit) {
    if (on_ready) on_ready(unit);
  };
  gather_tokens(windows);
  const int64_t depth = dims_.mtp_depth;
  const float mtp_scale = depth > 0 ? mtp_weight / static_cast<float>(depth) : 0.0f;
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    moe_layers_[i]->set_aux_grad_scale(backward ? grad_scale : 0.0f);
    moe_layers_[i]->set_balance_sums(sums.view(moe_sums(i), {ops::kBalanceSums}));
  }

  // Ids outside the vocabulary are counted into the sums, which the caller reads anyway.
  Tensor outside = sums.view(outside_sum(), {1});
  embed_.forward(ids_[0], x_[0], &outside);
  for (size_t l = 0; l < blocks_.size(); ++l) blocks_[l]->forward(x_[l], x_[l + 1]);
  final_norm_.forward(x_.back(), h0_);
  Tensor main_sum = sums.view(0, {1});
  head_.loss(h0_, targets_[0], grad_scale, backward ? &dh0_ : nullptr, main_sum, &outside);
  for (int64_t k = 0; k < depth; ++k) {
    embed_.forward(ids_[k + 1], emb_[k], &outside);
    mtp_[k]->forward(emb_[k], k == 0 ? h0_ : mtp_[k - 1]->output());
    Tensor mtp_sum = sums.view(1 + k, {1});
    head_.loss(mtp_[k]->output(), targets_[k + 1], grad_scale * mtp_scale,
               backward ? &d_head_in_[k] : nullptr, mtp_sum, &outside);
  }
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    moe_layers_[i]->set_balance_sums({});  // a later forward for logits adds nothing here
    if (!backward) continue;
    const MoeStats& st = moe_layers_[i]->stats();
    MoeStepStats& acc = moe_step_[i];
    for (size_t e = 0; e < st.counts.size(); ++e) acc.counts[e] += st.counts[e];
    acc.dropped += st.dropped;
    acc.rows_sent += st.rows_sent;
    acc.rows_off_rank += st.rows_off_rank;
    acc.rows_received_off_rank += st.rows_received_off_rank;
    acc.rows_received += st.rows_received;
    ++acc.micro_batches;
  }
  if (!backward) return;

  for (int64_t k = depth - 1; k >= 0; --k) {
    Tensor& d_prev = k == 0 ? dh0_ : d_prev_[k];
    if (k > 0) ops::fill(d_prev, 0.0f);
    const Tensor d_out = k + 1 < depth ? d_prev_[k + 1] : Tensor();
    mtp_[k]->backward(d_head_in_[k], d_out, emb_[k], k == 0 ? h0_ : mtp_[k - 1]->output(),
                      d_emb_[k], d_prev);
    embed_.backward(ids_[k + 1], d_emb_[k]);
    ready(static_cast<int>(depth - 1 - k));
  }
  final_norm_.backward(dh0_, x_.back(), dx_a_, /*accumulate_dx=*/false);
  ready(head_unit());  // the head's gradients were complete after the forward pass
  for (int64_t l = dims_.layers - 1; l >= 0; --l) {
    blocks_[l]->backward(dx_a_, x_[l], dx_b_);
    std::swap(dx_a_, dx_b_);
    ready(block_unit(l));
  }
  embed_.backward(ids_[0], dx_a_);
  ready(embedding_unit());
}

void Model::forward_backward(std::span<const int32_t> windows, float mtp_weight, float grad_scale,
                             Tensor& sums, const GradReadyHook& on_ready) {
  run(windows, mtp_weight, true, grad_scale, sums, on_ready);
}

void Model::evaluate(std::span<const int32_t> windows, Tensor& sums) {
  params_.cast_weights();  // evaluation follows an update
  run(windows, 0.0f, false, 0.0f, sums, {});
}

Losses Model::forward_backward(std::span<const int32_t> windows, float mtp_weight,
                               float grad_scale) {
  params_.cast_weights();
  Tensor sums = new_sums();
  forward_backward(windows, mtp_weight, grad_scale, sums);
  return losses(ops::to_host<double>(sums), 1, mtp_weight);
}

Losses Model::evaluate(std::span<const int32_t> windows, float mtp_weight) {
  Tensor sums = new_sums();
  evaluate(windows, sums);
  return losses(ops::to_host<double>(sums), 1, mtp_weight);
}

Tensor Model::logits(std::span<const int32_t> tokens) {
  if (static_cast<int64_t>(tokens.size()) != dims_.rows())
    throw Error(detail::concat("logits: the model takes ", dims_.batch, " x ", dims_.seq,
                               " tokens, got ", tokens.size()));
  params_.cast_weights();
  ops::copy_from_host(tokens, ids_[0]);
  embed_.forward(ids_[0], x_[0]);
  for (size_t l = 0; l < blocks_.size(); ++l) blocks_[l]->forward(x_[l], x_[l + 1]);
  final_norm_.forward(x_.back(), h0_);
  Tensor out = rt_.empty({dims_.rows(), rt_.tp.padded_share(dims_.vocab)});
  ops::matmul(h0_, false, head_weight_.value(), true, out);
  return out;
}

double MoeStepStats::max_violation() const {
  double sum = 0, mx = 0;
  for (int64_t c : counts) sum += static_cast<double>(c), mx = std::max(mx, static_cast<double>(c));
  const double mean = counts.empty() ? 0.0 : sum / static_cast<double>(counts.size());
  return mean > 0 ? (mx - mean) / mean : 0.0;
}

std::vector<MoeStepStats> Model::moe_step_stats(std::span<const double> sums) const {
  MOETRON_CHECK(static_cast<int64_t>(sums.size()) == sums_size(), sums.size(), " sums for ",
                sums_size());
  std::vector<MoeStepStats> out = moe_step_;
  for (size_t i = 0; i < out.size(); ++i) {
    const double* b = sums.data() + moe_sums(i);
    out[i].seq_aux = b[ops::kSeqAux];
    out[i].aux = b[ops::kAux];
    out[i].z = b[ops::kZ];
    out[i].entropy = b[ops::kEntropy];
  }
  return out;
}

std::vector<TokenMixer*> Model::mixers() {
  std::vector<TokenMixer*> out;
  for (const auto& b : blocks_) out.push_back(&b->mixer());
  for (const auto& m : mtp_) out.push_back(&m->block().mixer());
  return out;
}

void Model::begin_step() {
  params_.cast_weights();  // the step's weights: once, from the masters the last update left
  for (TokenMixer* m : mixers()) m->reset_max_logits();
  moe_step_.assign(moe_layers_.size(), {});
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    moe_step_[i].name = moe_layers_[i]->name();
    moe_step_[i].counts.assign(static_cast<size_t>(dims_.moe.experts), 0);
  }
}

void Model::update_router_biases(int64_t step, const std::vector<MoeStepStats>& loads) {
  const MoeDims& m = dims_.moe;
  if (m.bias_update_speed <= 0 || (m.bias_freeze_step > 0 && step >= m.bias_freeze_step)) return;
  MOETRON_CHECK(loads.size() == moe_layers_.size(), loads.size(), " loads for ", moe_layers_.size(),
                " MoE layers");
  for (size_t i = 0; i < moe_layers_.size(); ++i)
    moe_layers_[i]->update_bias(loads[i].counts, m.bias_update_speed);
}

double Model::train_flops_per_token() const {
  const double d = static_cast<double>(dims_.hidden);
  const double heads = static_cast<double>(dims_.heads);
  const double dense_ffn = 3 * d * static_cast<double>(dims_.intermediate);
  // MoE: the router plus only the experts a token uses (k routed + the shared ones).
  const MoeDims& m = dims_.moe;
  const double moe_ffn = 3 * d * static_cast<double>(m.intermediate * (m.k + m.shared)) +
                         d * static_cast<double>(m.experts);
  // Per mixer: its projections' weights, and the widths of a query's scores (q.k) and of the
  // values it sums, over (T + 1) / 2 keys on average (causal).
  struct MixerCost {
    double params, qk, v;
    double mixing = 0;  // linear attention: multiply-adds per token of its chunked form
  };
  auto mixer_cost = [&](MixerKind kind) -> MixerCost {
    if (kind == MixerKind::gated_deltanet) {
      // The projections and the conv; per value head, the chunked form's products (the
      // intra-chunk q.k and its values over (C + 1) / 2 positions, k.k and the substitutions
      // for U and W over C / 2, and the state's three dk x dv products).
      const GatedDeltaNetDims& g = dims_.gdn;
      const auto f = [](int64_t v) { return static_cast<double>(v); };
      const double kw = f(g.k_heads * g.k_dim), vw = f(g.v_heads * g.v_dim);
      const double c = f(std::min(dims_.seq, ops::kGatedDeltaChunk)), dk = f(g.k_dim),
                   dv = f(g.v_dim);
      const double per_head =
          (dk + dv) * (c + 1) / 2 + dk * c / 2 + (dk + dv) * c / 2 + 3 * dk * dv;
      return {d * (2 * kw + 2 * vw + 2 * f(g.v_heads)) + d * vw + f(g.conv_dim() * g.conv), 0, 0,
              f(g.v_heads) * per_head};
    }
    if (kind == MixerKind::mla) {
      const MlaDims& a = dims_.mla;
      const auto f = [](int64_t v) { return static_cast<double>(v); };
      const double q =
          a.q_lora > 0 ? f(a.q_lora) * d + heads * f(a.qk()) * f(a.q_lora) : heads * f(a.qk()) * d;
      return {q + f(a.kv_lora + a.rope) * d + heads * f(a.nope + a.v) * f(a.kv_lora) +
                  d * heads * f(a.v),
              heads * f(a.qk()), heads * f(a.v)};
    }
    const double q = heads * static_cast<double>(dims_.head_dim);
    const double kv = static_cast<double>(dims_.kv_heads * dims_.head_dim);
    return {d * ((dims_.output_gate ? 3 : 2) * q + 2 * kv), q, q};
  };
  const double keys = (static_cast<double>(dims_.seq) + 1.0) / 2.0;
  double matmul_params = 0, attn = 0;
  for (int64_t l = 0; l < dims_.layers + dims_.mtp_depth; ++l) {
    const MixerCost c = mixer_cost(dims_.mixer(l));
    matmul_params += c.params + (dims_.is_moe_layer(l) ? moe_ffn : dense_ffn);
    attn += 2.0 * (c.qk + c.v) * keys + 2.0 * c.mixing;
  }
  const double depth = static_cast<double>(dims_.mtp_depth);
  matmul_params += depth * 2.0 * d * d;                                   // eh_proj
  matmul_params += (1.0 + depth) * d * static_cast<double>(dims_.vocab);  // head, per depth
  return 3.0 * (2.0 * matmul_params + attn);
}

}  // namespace moetron
