#include "tests/gpu/train_check.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/check.h"
#include "core/ops.h"
#include "models/model.h"

namespace moetron::gpu {
namespace {

uint64_t mix(uint64_t x) {  // SplitMix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t mix(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0) {
  return mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
}

// The writer: "key": value pairs of one object, in order.
class Object {
 public:
  Object& add(const char* key, const std::string& raw) {
    text_ += (text_.empty() ? "" : ", ") + data::json_quote(key) + ": " + raw;
    return *this;
  }
  Object& num(const char* key, double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return add(key, buf);
  }
  Object& num(const char* key, int64_t v) { return add(key, std::to_string(v)); }
  Object& flag(const char* key, bool v) { return add(key, v ? "true" : "false"); }
  Object& str(const char* key, const std::string& v) { return add(key, data::json_quote(v)); }
  std::string text() const { return "{" + text_ + "}"; }

 private:
  std::string text_;
};

const char* mixer_name(MixerKind m) {
  switch (m) {
    case MixerKind::attention:
      return "attention";
    case MixerKind::mla:
      return "mla";
    case MixerKind::gated_deltanet:
      return "gated_deltanet";
  }
  return "?";
}

int64_t int_at(const data::JsonValue& o, const char* key) {
  return static_cast<int64_t>(o.at(key).as_u64());
}
float float_at(const data::JsonValue& o, const char* key) {
  return static_cast<float>(o.at(key).as_double());
}

}  // namespace

void synthetic_windows(uint64_t seed, int64_t vocab, int64_t window, int64_t step,
                       std::span<int32_t> windows) {
  MOETRON_CHECK(vocab > 0 && window > 0 && static_cast<int64_t>(windows.size()) % window == 0,
                "vocab ", vocab, ", window ", window, ", ", windows.size(), " tokens");
  const uint64_t v = static_cast<uint64_t>(vocab), s = static_cast<uint64_t>(step);
  uint64_t token = 0;
  for (size_t i = 0; i < windows.size(); ++i) {
    if (static_cast<int64_t>(i) % window == 0) token = mix(seed, s, i) % v;  // a window's start
    windows[i] = static_cast<int32_t>(token);
    const uint64_t r = mix(seed ^ 0x5EEDull, s, i) % 15;
    const uint64_t successor = r < 8 ? 0 : r < 12 ? 1 : r < 14 ? 2 : 3;
    token = mix(seed ^ 0xC4A1ull, token, successor) % v;
  }
}

std::vector<StepRecord> train(const TrainSpec& spec, const Runtime& rt, int64_t steps,
                              const std::function<void(int64_t, const StepRecord&)>& on_step) {
  Model model(spec.dims, rt);
  ParamTable& params = model.params();
  params.init(spec.seed, spec.init_std);
  AdamW adamw(params, spec.adamw);
  std::vector<int32_t> windows(static_cast<size_t>(spec.dims.batch * spec.dims.window()));
  const int64_t n_sums = model.sums_size();
  std::vector<StepRecord> records;
  for (int64_t step = 1; step <= steps; ++step) {
    synthetic_windows(spec.seed, spec.dims.vocab, spec.dims.window(), step, windows);
    ops::fill(params.flat_grads(), 0.0f);
    model.begin_step();
    // The step's scalars stay on the device until one read: the model's sums, then the squared
    // gradient norm (as the trainer's step, trainer/train_step.cc).
    Tensor scalars = Tensor::zeros({n_sums + 1}, DType::f64, rt.device);
    Tensor sums = scalars.view(0, {n_sums}), norm_squared = scalars.view(n_sums, {1});
    model.forward_backward(windows, spec.mtp_weight, 1.0f, sums);
    ops::sum_squares(params.flat_grads(), norm_squared);
    const std::vector<double> host = ops::to_host<double>(scalars);
    const std::span<const double> host_sums = std::span(host).first(static_cast<size_t>(n_sums));
    const Losses losses = model.losses(host_sums, 1, spec.mtp_weight);
    const StepRecord r{losses.main, std::sqrt(host.back())};
    if (!std::isfinite(losses.total) || !std::isfinite(r.grad_norm))
      throw Error(detail::concat("step ", step, " on ", device_name(rt.device), ": loss ",
                                 losses.total, ", gradient norm ", r.grad_norm));
    adamw.step(spec.lr, r.grad_norm);
    model.update_router_biases(step - 1, model.moe_step_stats(host_sums));
    records.push_back(r);
    if (on_step) on_step(step, r);
  }
  return records;
}

std::string spec_json(const TrainSpec& spec) {
  const ModelDims& d = spec.dims;
  std::string mixers = "[";
  for (size_t i = 0; i < d.mixers.size(); ++i)
    mixers += (i ? ", " : "") + data::json_quote(mixer_name(d.mixers[i]));
  mixers += "]";
  Object yarn;
  yarn.num("factor", d.yarn.factor).num("beta_fast", d.yarn.beta_fast);
  yarn.num("beta_slow", d.yarn.beta_slow).num("mscale", d.yarn.mscale);
  yarn.num("mscale_all_dim", d.yarn.mscale_all_dim).num("original", d.yarn.original);
  Object mla;
  mla.num("q_lora", d.mla.q_lora).num("kv_lora", d.mla.kv_lora).num("nope", d.mla.nope);
  mla.num("rope", d.mla.rope).num("v", d.mla.v);
  Object gdn;
  gdn.num("k_heads", d.gdn.k_heads).num("k_dim", d.gdn.k_dim).num("v_heads", d.gdn.v_heads);
  gdn.num("v_dim", d.gdn.v_dim).num("conv", d.gdn.conv);
  const MoeDims& m = d.moe;
  Object moe;
  moe.num("experts", m.experts).num("k", m.k).num("intermediate", m.intermediate);
  moe.num("shared", m.shared).num("first_dense", m.first_dense).num("n_group", m.n_group);
  moe.num("topk_group", m.topk_group).num("scaling", m.scaling);
  moe.num("capacity_factor", m.capacity_factor);
  moe.str("scoring", m.scoring == ops::Scoring::softmax ? "softmax" : "sigmoid");
  moe.flag("norm_topk_prob", m.norm_topk_prob).num("seq_aux_alpha", m.seq_aux_alpha);
  moe.num("aux_coeff", m.aux_coeff).num("z_coeff", m.z_coeff);
  moe.num("bias_update_speed", m.bias_update_speed).num("bias_freeze_step", m.bias_freeze_step);
  moe.flag("shared_gate", m.shared_gate);
  Object dims;
  dims.num("batch", d.batch).num("seq", d.seq).num("hidden", d.hidden).num("heads", d.heads);
  dims.num("kv_heads", d.kv_heads).num("head_dim", d.head_dim);
  dims.num("intermediate", d.intermediate).num("vocab", d.vocab).num("layers", d.layers);
  dims.num("mtp_depth", d.mtp_depth).num("eps", d.eps).num("rope_theta", d.rope_theta);
  dims.num("rope_dim", d.rope_dim).flag("output_gate", d.output_gate);
  dims.flag("qk_norm", d.qk_norm).flag("zero_centered_norms", d.zero_centered_norms);
  dims.str("rope_style",
           d.rope_style == ops::RopeStyle::interleaved ? "interleaved" : "rotate_half");
  dims.add("yarn", yarn.text()).add("mixers", mixers).add("mla", mla.text());
  dims.add("gdn", gdn.text()).flag("tied_head", d.tied_head).add("moe", moe.text());
  const AdamWSettings& a = spec.adamw;
  Object adamw;
  adamw.num("beta1", a.beta1).num("beta2", a.beta2).num("eps", a.eps);
  adamw.num("weight_decay", a.weight_decay).num("grad_clip", a.grad_clip);
  adamw.flag("decay_norms_and_embeddings", a.decay_norms_and_embeddings);
  Object s;
  s.add("dims", dims.text()).add("adamw", adamw.text()).num("lr", spec.lr);
  s.num("mtp_weight", spec.mtp_weight).add("seed", std::to_string(spec.seed));
  s.num("init_std", spec.init_std).num("steps", spec.steps).num("peak_flops", spec.peak_flops);
  return s.text();
}

TrainSpec spec_from_json(const data::JsonValue& j) {
  TrainSpec spec;
  const data::JsonValue& o = j.at("dims");
  ModelDims& d = spec.dims;
  d.batch = int_at(o, "batch");
  d.seq = int_at(o, "seq");
  d.hidden = int_at(o, "hidden");
  d.heads = int_at(o, "heads");
  d.kv_heads = int_at(o, "kv_heads");
  d.head_dim = int_at(o, "head_dim");
  d.intermediate = int_at(o, "intermediate");
  d.vocab = int_at(o, "vocab");
  d.layers = int_at(o, "layers");
  d.mtp_depth = int_at(o, "mtp_depth");
  d.eps = float_at(o, "eps");
  d.rope_theta = float_at(o, "rope_theta");
  d.rope_dim = int_at(o, "rope_dim");
  d.output_gate = o.at("output_gate").as_bool();
  d.qk_norm = o.at("qk_norm").as_bool();
  d.zero_centered_norms = o.at("zero_centered_norms").as_bool();
  const std::string& style = o.at("rope_style").as_string();
  if (style != "interleaved" && style != "rotate_half")
    throw Error(
        detail::concat(o.origin, ": rope_style \"", style, "\" (valid: rotate_half, interleaved)"));
  d.rope_style = style == "interleaved" ? ops::RopeStyle::interleaved : ops::RopeStyle::rotate_half;
  const data::JsonValue& y = o.at("yarn");
  d.yarn = {float_at(y, "factor"), float_at(y, "beta_fast"),      float_at(y, "beta_slow"),
            float_at(y, "mscale"), float_at(y, "mscale_all_dim"), int_at(y, "original")};
  for (const data::JsonValue& m : o.at("mixers").as_array()) {
    const std::string& name = m.as_string();
    if (name == "attention")
      d.mixers.push_back(MixerKind::attention);
    else if (name == "mla")
      d.mixers.push_back(MixerKind::mla);
    else if (name == "gated_deltanet")
      d.mixers.push_back(MixerKind::gated_deltanet);
    else
      throw Error(detail::concat(m.origin, ": mixer \"", name,
                                 "\" (valid: attention, mla, gated_deltanet)"));
  }
  const data::JsonValue& a = o.at("mla");
  d.mla = {int_at(a, "q_lora"), int_at(a, "kv_lora"), int_at(a, "nope"), int_at(a, "rope"),
           int_at(a, "v")};
  const data::JsonValue& g = o.at("gdn");
  d.gdn = {int_at(g, "k_heads"), int_at(g, "k_dim"), int_at(g, "v_heads"), int_at(g, "v_dim"),
           int_at(g, "conv")};
  d.tied_head = o.at("tied_head").as_bool();
  const data::JsonValue& e = o.at("moe");
  MoeDims& m = d.moe;
  m.experts = int_at(e, "experts");
  m.k = int_at(e, "k");
  m.intermediate = int_at(e, "intermediate");
  m.shared = int_at(e, "shared");
  m.first_dense = int_at(e, "first_dense");
  m.n_group = int_at(e, "n_group");
  m.topk_group = int_at(e, "topk_group");
  m.scaling = float_at(e, "scaling");
  m.capacity_factor = float_at(e, "capacity_factor");
  const std::string& scoring = e.at("scoring").as_string();
  if (scoring != "softmax" && scoring != "sigmoid")
    throw Error(detail::concat(e.origin, ": scoring \"", scoring, "\" (valid: sigmoid, softmax)"));
  m.scoring = scoring == "softmax" ? ops::Scoring::softmax : ops::Scoring::sigmoid;
  m.norm_topk_prob = e.at("norm_topk_prob").as_bool();
  m.seq_aux_alpha = float_at(e, "seq_aux_alpha");
  m.aux_coeff = float_at(e, "aux_coeff");
  m.z_coeff = float_at(e, "z_coeff");
  m.bias_update_speed = float_at(e, "bias_update_speed");
  m.bias_freeze_step = int_at(e, "bias_freeze_step");
  m.shared_gate = e.at("shared_gate").as_bool();
  const data::JsonValue& w = j.at("adamw");
  spec.adamw = {float_at(w, "beta1"),     float_at(w, "beta2"),
                float_at(w, "eps"),       float_at(w, "weight_decay"),
                float_at(w, "grad_clip"), w.at("decay_norms_and_embeddings").as_bool()};
  spec.lr = j.at("lr").as_double();
  spec.mtp_weight = float_at(j, "mtp_weight");
  spec.seed = j.at("seed").as_u64();
  spec.init_std = float_at(j, "init_std");
  spec.steps = int_at(j, "steps");
  spec.peak_flops = j.at("peak_flops").as_double();
  return spec;
}

std::string reference_json(
    const TrainSpec& spec,
    const std::vector<std::pair<std::string, std::vector<StepRecord>>>& runs) {
  Object all;
  for (const auto& [name, records] : runs) {
    std::string loss = "[", norm = "[";
    char buf[32];
    for (size_t i = 0; i < records.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%s%.17g", i ? ", " : "", records[i].loss);
      loss += buf;
      std::snprintf(buf, sizeof buf, "%s%.17g", i ? ", " : "", records[i].grad_norm);
      norm += buf;
    }
    all.add(name.c_str(), Object().add("loss", loss + "]").add("grad_norm", norm + "]").text());
  }
  return "{\"spec\": " + spec_json(spec) + ",\n \"runs\": " + all.text() + "}\n";
}

std::vector<StepRecord> run_from_json(const data::JsonValue& reference, const std::string& name) {
  const data::JsonValue& run = reference.at("runs").at(name);
  const std::vector<data::JsonValue>& loss = run.at("loss").as_array();
  const std::vector<data::JsonValue>& norm = run.at("grad_norm").as_array();
  MOETRON_CHECK(loss.size() == norm.size(), run.origin, ": ", loss.size(), " losses, ", norm.size(),
                " norms");
  std::vector<StepRecord> records;
  for (size_t i = 0; i < loss.size(); ++i)
    records.push_back({loss[i].as_double(), norm[i].as_double()});
  return records;
}

}  // namespace moetron::gpu
