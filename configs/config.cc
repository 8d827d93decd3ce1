#include "configs/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <string_view>
#include <utility>

#include "core/check.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "data/file_io.h"

namespace moetron {
namespace {

namespace pb = google::protobuf;
using detail::concat;

// ---------------------------------------------------------------------------------------
// Suggestions for misspelled names.

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string field_names(const pb::Descriptor* d) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) {
    if (i) out += ", ";
    out += d->field(i)->name();
  }
  return out;
}

std::string enum_names(const pb::EnumDescriptor* e) {
  std::string out;
  for (int i = 0; i < e->value_count(); ++i) {
    if (i) out += ", ";
    out += e->value(i)->name();
  }
  return out;
}

// " (did you mean 'x'? valid: a, b, c)" for an unknown field `name` of message `d`.
std::string unknown_field_hint(const pb::Descriptor* d, std::string_view name) {
  std::string best;
  size_t best_dist = std::max<size_t>(2, name.size() / 3) + 1;  // only plausible typos
  for (int i = 0; i < d->field_count(); ++i) {
    const size_t dist = edit_distance(name, d->field(i)->name());
    if (dist < best_dist) best_dist = dist, best = d->field(i)->name();
  }
  std::string out = " (";
  if (!best.empty()) out += concat("did you mean '", best, "'? ");
  return out + "valid: " + field_names(d) + ")";
}

// The enum-typed field called `name` anywhere in the schema (field names are unique enough
// in moetron.proto to identify the enum from a parser message that only names the field).
const pb::EnumDescriptor* find_enum_of_field(const pb::Descriptor* d, const std::string& name) {
  if (const auto* f = d->FindFieldByName(name); f && f->enum_type()) return f->enum_type();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* sub = d->field(i)->message_type();
    if (sub && sub != d) {
      if (const auto* e = find_enum_of_field(sub, name)) return e;
    }
  }
  return nullptr;
}

// The text between `open` and the next `"` after it, or "" when `open` is absent.
std::string quoted_after(const std::string& s, std::string_view open) {
  const size_t start = s.find(open);
  if (start == std::string::npos) return "";
  const size_t from = start + open.size();
  const size_t end = s.find('"', from);
  return end == std::string::npos ? "" : s.substr(from, end - from);
}

// Adds the valid names to the protobuf parser's messages that lack them.
std::string explain_parse_error(const std::string& msg) {
  if (msg.find("has no field named") != std::string::npos) {
    const auto* d = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(
        quoted_after(msg, "Message type \""));
    if (d) return msg + unknown_field_hint(d, quoted_after(msg, "has no field named \""));
  }
  if (msg.find("Unknown enumeration value") != std::string::npos) {
    const auto* e =
        find_enum_of_field(config::RunConfig::descriptor(), quoted_after(msg, "for field \""));
    if (e) return msg + " (valid: " + enum_names(e) + ")";
  }
  if (msg.find("Invalid value for boolean field") != std::string::npos)
    return msg + " (valid: true, false)";
  return msg;
}

class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (has_error) return;  // later errors are usually consequences of the first
    has_error = true;
    line_ = line;
    column_ = column;
    message_ = message;
  }
  bool has_error = false;
  int line_ = -1;
  int column_ = 0;
  std::string message_;
};

// protobuf reports zero-based positions; editors and compilers show one-based ones.
std::string location(const std::string& source, int line, int column) {
  if (line < 0) return source;
  return concat(source, ":", line + 1, ":", column + 1);
}

// Protobuf reports some errors at the token *after* the culprit (an unknown field name is
// reported at its ':', a bad enum value at whatever follows it, possibly on the next line).
// Moves (line, column) back to the start of the preceding token for those messages.
void point_at_culprit(const std::string& text, const std::string& msg, int& line, int& column) {
  const bool after = msg.find("has no field named") != std::string::npos ||
                     msg.find("Unknown enumeration value") != std::string::npos ||
                     msg.find("Invalid value for boolean field") != std::string::npos ||
                     msg.find("is specified multiple times") != std::string::npos;
  if (!after || line < 0) return;
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  struct Quiet : pb::io::ErrorCollector {
    void AddError(int, pb::io::ColumnNumber, const std::string&) override {}
  } quiet;
  pb::io::Tokenizer tokens(&input, &quiet);
  tokens.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);  // text format's '#'
  int prev_line = -1, prev_column = 0;
  while (tokens.Next()) {
    const auto& t = tokens.current();
    if (std::pair(t.line, t.column) >= std::pair(line, column)) break;
    prev_line = t.line;
    prev_column = t.column;
  }
  if (prev_line >= 0) line = prev_line, column = prev_column;
}

config::RunConfig parse_impl(const std::string& text, const std::string& source,
                             pb::TextFormat::ParseInfoTree* tree) {
  config::RunConfig cfg;
  pb::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (tree) parser.WriteLocationsTo(tree);
  const bool ok = parser.ParseFromString(text, &cfg);
  if (!ok || errors.has_error) {
    const std::string msg = errors.has_error ? explain_parse_error(errors.message_)
                                             : std::string("could not parse the config");
    point_at_culprit(text, errors.message_, errors.line_, errors.column_);
    throw Error(concat(location(source, errors.line_, errors.column_), ": ", msg));
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------
// Overrides.

template <typename Int>
bool parse_int(std::string_view s, Int& out) {
  if (s.starts_with('+')) s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

template <typename Float>
bool parse_float(std::string_view s, Float& out) {
  if (s.starts_with('+')) s.remove_prefix(1);
  if (s.empty()) return false;
  double d = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size()) return false;
  // A finite value beyond the type's range would silently become inf.
  if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<Float>::max()) return false;
  out = static_cast<Float>(d);
  return true;
}

// Sets singular scalar `f` of `msg` from `value`; returns "" or what was expected instead.
std::string set_scalar(pb::Message* msg, const pb::FieldDescriptor* f, const std::string& value) {
  const pb::Reflection* r = msg->GetReflection();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!parse_int(value, v)) return "expected an int32 (a whole number in [-2^31, 2^31-1])";
      r->SetInt32(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!parse_int(value, v)) return "expected an int64 (a whole number)";
      r->SetInt64(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!parse_int(value, v)) return "expected a uint32 (a whole number in [0, 2^32-1])";
      r->SetUInt32(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!parse_int(value, v)) return "expected a uint64 (a whole number in [0, 2^64-1])";
      r->SetUInt64(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (!parse_float(value, v)) return "expected a float (e.g. 0.5, 1e-3)";
      r->SetFloat(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!parse_float(value, v)) return "expected a double (e.g. 0.5, 1e-3)";
      r->SetDouble(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      if (value == "true" || value == "1") {
        r->SetBool(msg, f, true);
      } else if (value == "false" || value == "0") {
        r->SetBool(msg, f, false);
      } else {
        return "expected a bool (valid: true, false)";
      }
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = f->enum_type()->FindValueByName(value);
      if (!v) return concat("expected one of: ", enum_names(f->enum_type()));
      r->SetEnum(msg, f, v);
      return "";
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      r->SetString(msg, f, value);
      return "";
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  MOETRON_CHECK(false, "set_scalar on message field ", f->full_name());
  return "";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    parts.push_back(s.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

// The field path of an assignment ("a.b=v" -> "a.b"), or "" when it has no '='.
std::string override_path(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  return eq == std::string::npos ? "" : assignment.substr(0, eq);
}

// ---------------------------------------------------------------------------------------
// Validation.

// A validation failure that remembers the field path, so load_config can point at the line.
class ConfigProblem : public Error {
 public:
  ConfigProblem(std::string field_path, const std::string& what)
      : Error(what), path(std::move(field_path)) {}
  std::string path;
};

template <typename V>
[[noreturn]] void fail(const std::string& path, const V& value, const std::string& why) {
  throw ConfigProblem(path, concat(path, " = ", value, ": ", why));
}

template <typename V>
void positive(const std::string& path, V v) {
  if (!(v > 0)) fail(path, v, "must be > 0");
}
template <typename V>
void non_negative(const std::string& path, V v) {
  if (!(v >= 0)) fail(path, v, "must be >= 0");
}
template <typename V, typename B>
void in_range(const std::string& path, V v, B lo, B hi, const std::string& range) {
  if (!(v >= lo && v <= hi)) fail(path, v, "must be in " + range);
}

// "1, 2, 4, 8" - the divisors of n accepted by `keep`, for "valid:" lists.
template <typename Keep>
std::string divisors(int64_t n, Keep keep) {
  std::vector<int64_t> ds;
  for (int64_t d = 1; d * d <= n; ++d) {
    if (n % d) continue;
    ds.push_back(d);
    if (d != n / d) ds.push_back(n / d);
  }
  std::sort(ds.begin(), ds.end());
  std::string out;
  for (int64_t d : ds) {
    if (!keep(d)) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(d);
  }
  return out;
}
std::string divisors(int64_t n) {
  return divisors(n, [](int64_t) { return true; });
}

// Any NaN/Inf among the float fields that are set (defaults are finite).
void check_finite(const pb::Message& msg, const std::string& prefix) {
  const pb::Reflection* r = msg.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(msg, &fields);
  for (const auto* f : fields) {
    const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
    const int n = f->is_repeated() ? r->FieldSize(msg, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string p = f->is_repeated() ? concat(path, "[", i, "]") : path;
      switch (f->cpp_type()) {
        case pb::FieldDescriptor::CPPTYPE_FLOAT: {
          const float v = f->is_repeated() ? r->GetRepeatedFloat(msg, f, i) : r->GetFloat(msg, f);
          if (!std::isfinite(v)) fail(p, v, "must be a finite number");
          break;
        }
        case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
          const double v =
              f->is_repeated() ? r->GetRepeatedDouble(msg, f, i) : r->GetDouble(msg, f);
          if (!std::isfinite(v)) fail(p, v, "must be a finite number");
          break;
        }
        case pb::FieldDescriptor::CPPTYPE_MESSAGE:
          check_finite(f->is_repeated() ? r->GetRepeatedMessage(msg, f, i) : r->GetMessage(msg, f),
                       p);
          break;
        default:
          break;
      }
    }
  }
}

void check_mla(const config::MlaConfig& a) {
  non_negative("model.mla.q_lora_rank", a.q_lora_rank());
  positive("model.mla.kv_lora_rank", a.kv_lora_rank());
  positive("model.mla.qk_nope_head_dim", a.qk_nope_head_dim());
  positive("model.mla.qk_rope_head_dim", a.qk_rope_head_dim());
  if (a.qk_rope_head_dim() % 2 != 0)
    fail("model.mla.qk_rope_head_dim", a.qk_rope_head_dim(),
         "must be even: RoPE rotates pairs of dimensions");
  positive("model.mla.v_head_dim", a.v_head_dim());
}

void check_rope_scaling(const config::RopeScalingConfig& r) {
  if (r.factor() < 1.0f)
    fail("model.rope_scaling.factor", r.factor(), "must be >= 1 (1 = no scaling)");
  if (r.factor() == 1.0f) return;
  positive("model.rope_scaling.original_max_position_embeddings",
           r.original_max_position_embeddings());
  positive("model.rope_scaling.beta_fast", r.beta_fast());
  positive("model.rope_scaling.beta_slow", r.beta_slow());
  non_negative("model.rope_scaling.mscale", r.mscale());
  non_negative("model.rope_scaling.mscale_all_dim", r.mscale_all_dim());
}

void check_model(const config::ModelConfig& m) {
  positive("model.vocab_size", m.vocab_size());
  positive("model.hidden_size", m.hidden_size());
  positive("model.num_hidden_layers", m.num_hidden_layers());
  positive("model.num_attention_heads", m.num_attention_heads());
  positive("model.intermediate_size", m.intermediate_size());
  const int layers = m.num_hidden_layers(), pattern = m.layer_types_size();
  if (pattern > 0 && layers % pattern != 0)
    fail("model.layer_types", concat(pattern, " entries"),
         concat("must divide model.num_hidden_layers = ", layers,
                ": the pattern repeats over the layers (valid lengths: ", divisors(layers), ")"));
  const bool attention = has_layer_type(m, config::ModelConfig::ATTENTION);
  const bool mla = has_layer_type(m, config::ModelConfig::MLA);
  const int hidden = m.hidden_size(), heads = m.num_attention_heads();
  non_negative("model.head_dim", m.head_dim());
  if (attention && m.head_dim() == 0 && hidden % heads != 0) {
    fail("model.num_attention_heads", heads,
         concat("must divide model.hidden_size = ", hidden, " (valid: ", divisors(hidden),
                "), or set model.head_dim"));
  }
  const float factor = m.partial_rotary_factor();
  if (!(factor > 0.0f && factor <= 1.0f))
    fail("model.partial_rotary_factor", factor, "must be in (0, 1]");
  if (attention && (rotary_dim(m) % 2 != 0 || rotary_dim(m) < 2 ||
                    std::abs(head_dim(m) * static_cast<double>(factor) - rotary_dim(m)) > 1e-3)) {
    if (factor < 1.0f || m.head_dim() > 0)
      fail(factor < 1.0f ? "model.partial_rotary_factor" : "model.head_dim",
           factor < 1.0f ? concat(factor) : concat(m.head_dim()),
           concat("gives head_dim = ", head_dim(m), " and a RoPE width head_dim * ",
                  "partial_rotary_factor = ", head_dim(m) * static_cast<double>(factor),
                  ", which must be an even whole number: RoPE rotates pairs of dimensions"));
    fail("model.num_attention_heads", heads,
         concat("gives head_dim = model.hidden_size / num_attention_heads = ", hidden, " / ", heads,
                " = ", hidden / heads,
                ", which must be even: RoPE rotates pairs of dimensions (valid: ",
                divisors(hidden, [&](int64_t h) { return (hidden / h) % 2 == 0; }), ")"));
  }
  non_negative("model.num_key_value_heads", m.num_key_value_heads());
  if (heads % kv_heads(m) != 0) {
    fail("model.num_key_value_heads", m.num_key_value_heads(),
         concat("must divide model.num_attention_heads = ", heads, " (valid: 0 = same as heads, ",
                divisors(heads), ")"));
  }
  if (mla) {
    check_mla(m.mla());
    if (m.num_key_value_heads() != 0 && m.num_key_value_heads() != heads)
      fail("model.num_key_value_heads", m.num_key_value_heads(),
           concat("must be 0 or num_attention_heads = ", heads,
                  " with MLA layers (every head has its own key and value)"));
    // One RoPE table serves every layer.
    if (attention && rotary_dim(m) != m.mla().qk_rope_head_dim())
      fail("model.mla.qk_rope_head_dim", m.mla().qk_rope_head_dim(),
           concat("must equal the ATTENTION layers' RoPE width ", rotary_dim(m),
                  " when both mixers are in one model (one RoPE table serves every layer)"));
  }
  if (has_layer_type(m, config::ModelConfig::GATED_DELTANET)) {
    const config::GatedDeltaNetConfig& g = m.linear_attention();
    positive("model.linear_attention.linear_num_key_heads", g.linear_num_key_heads());
    positive("model.linear_attention.linear_key_head_dim", g.linear_key_head_dim());
    positive("model.linear_attention.linear_num_value_heads", g.linear_num_value_heads());
    positive("model.linear_attention.linear_value_head_dim", g.linear_value_head_dim());
    positive("model.linear_attention.linear_conv_kernel_dim", g.linear_conv_kernel_dim());
    if (g.linear_num_value_heads() % g.linear_num_key_heads() != 0)
      fail("model.linear_attention.linear_num_value_heads", g.linear_num_value_heads(),
           concat("must be a multiple of linear_num_key_heads = ", g.linear_num_key_heads(),
                  " (each key head serves a group of value heads)"));
  }
  positive("model.rope_theta", m.rope_theta());
  check_rope_scaling(m.rope_scaling());
  positive("model.rms_norm_eps", m.rms_norm_eps());
  non_negative("model.num_nextn_predict_layers", m.num_nextn_predict_layers());
  positive("model.init_std", m.init_std());
}

void check_moe(const config::MoeConfig& e, int num_layers) {
  const int n = e.n_routed_experts();
  non_negative("model.moe.n_routed_experts", n);
  if (n == 0) return;  // dense model: the other MoE fields are unused
  const int k = e.num_experts_per_tok();
  in_range("model.moe.num_experts_per_tok", k, 1, n,
           concat("[1, model.moe.n_routed_experts = ", n, "]"));
  positive("model.moe.moe_intermediate_size", e.moe_intermediate_size());
  non_negative("model.moe.n_shared_experts", e.n_shared_experts());
  if (e.shared_expert_gate() && e.n_shared_experts() == 0)
    fail("model.moe.shared_expert_gate", "true",
         "gates the shared experts, and model.moe.n_shared_experts is 0 (set it to >= 1)");
  in_range("model.moe.first_k_dense_replace", e.first_k_dense_replace(), 0, num_layers,
           concat("[0, model.num_hidden_layers = ", num_layers, "]"));
  positive("model.moe.routed_scaling_factor", e.routed_scaling_factor());
  const int groups = e.n_group();
  if (groups < 1) fail("model.moe.n_group", groups, "must be >= 1 (1 = no group-limited routing)");
  if (n % groups != 0) {
    fail("model.moe.n_group", groups,
         concat("must divide model.moe.n_routed_experts = ", n, " (valid: ", divisors(n), ")"));
  }
  in_range("model.moe.topk_group", e.topk_group(), 1, groups,
           concat("[1, model.moe.n_group = ", groups, "]"));
  const int per_group = n / groups;
  if (k > e.topk_group() * per_group) {
    fail("model.moe.num_experts_per_tok", k,
         concat("exceeds the experts reachable with group-limited routing: topk_group (",
                e.topk_group(), ") * experts per group (", n, " / ", groups, " = ", per_group,
                ") = ", e.topk_group() * per_group, "; raise model.moe.topk_group or lower k"));
  }
  if (groups > 1 && e.scoring_func() == config::MoeConfig::SIGMOID && per_group < 2) {
    fail("model.moe.n_group", groups,
         concat("leaves ", per_group,
                " expert per group, but SIGMOID scoring ranks groups by the sum of their top-2 "
                "experts, so each group needs >= 2 (valid: ",
                divisors(n, [&](int64_t g) { return g == 1 || n / g >= 2; }), ")"));
  }
  non_negative("model.moe.bias_update_speed", e.bias_update_speed());
  non_negative("model.moe.bias_freeze_step", e.bias_freeze_step());
  non_negative("model.moe.seq_aux_loss_alpha", e.seq_aux_loss_alpha());
  non_negative("model.moe.aux_loss_coeff", e.aux_loss_coeff());
  non_negative("model.moe.z_loss_coeff", e.z_loss_coeff());
  if (e.capacity_factor() < 0) {
    fail("model.moe.capacity_factor", e.capacity_factor(),
         "capacity factor must be > 0, or 0 for dropless");
  }
}

void check_muon(const config::RunConfig& cfg) {
  if (cfg.optimizer().kind() != config::OptimizerConfig::MUON) return;
  const config::MuonConfig& m = cfg.optimizer().muon();
  if (!(m.momentum() >= 0.0f && m.momentum() < 1.0f))
    fail("optimizer.muon.momentum", m.momentum(), "must be in [0, 1)");
  in_range("optimizer.muon.ns_steps", m.ns_steps(), 1, 100, "[1, 100]");
  non_negative("optimizer.muon.weight_decay", m.weight_decay());
  positive("optimizer.muon.rms_scale", m.rms_scale());
  non_negative("optimizer.muon.qk_clip_tau", m.qk_clip_tau());
  // QK-clip rescales the query and key weights, which a q/k norm undoes.
  if (m.qk_clip_tau() > 0 && cfg.model().qk_norm())
    fail("optimizer.muon.qk_clip_tau", m.qk_clip_tau(),
         "must be 0 with model.qk_norm: the norms undo QK-clip's rescaling of the query and key "
         "weights (q/k norms bound the logits themselves)");
}

// The rules of the layout that do not depend on the world size (parallel/layout.cc checks the
// rest at launch).
void check_parallel(const config::RunConfig& cfg) {
  const config::ParallelConfig& p = cfg.parallel();
  const config::ModelConfig& m = cfg.model();
  const config::MoeConfig& e = m.moe();
  non_negative("parallel.dp", p.dp());
  positive("parallel.tp", p.tp());
  positive("parallel.ep", p.ep());
  const int tp = p.tp();
  // Each rule: a size tp must divide, and what it is.
  std::vector<std::pair<int64_t, std::string>> split_by_tp = {
      {m.num_attention_heads(), "model.num_attention_heads"},
      {m.intermediate_size(), "model.intermediate_size"}};
  if (has_layer_type(m, config::ModelConfig::ATTENTION))
    split_by_tp.push_back(
        {kv_heads(m), "model.num_key_value_heads (KV heads are split, not replicated)"});
  if (has_layer_type(m, config::ModelConfig::GATED_DELTANET)) {
    split_by_tp.push_back({m.linear_attention().linear_num_key_heads(),
                           "model.linear_attention.linear_num_key_heads"});
    split_by_tp.push_back({m.linear_attention().linear_num_value_heads(),
                           "model.linear_attention.linear_num_value_heads"});
  }
  if (e.n_routed_experts() > 0) {
    split_by_tp.push_back({int64_t{e.n_shared_experts()} * e.moe_intermediate_size(),
                           "model.moe.n_shared_experts * moe_intermediate_size"});
    split_by_tp.push_back({int64_t{cfg.data().micro_batch_size()} * cfg.data().seq_len(),
                           "data.micro_batch_size * data.seq_len (MoE layers split the tokens)"});
  }
  for (const auto& [size, what] : split_by_tp) {
    if (size % tp == 0) continue;
    int64_t common = m.num_attention_heads();
    for (const auto& rule : split_by_tp) common = std::gcd(common, rule.first);
    fail("parallel.tp", tp,
         concat("must divide ", what, " = ", size, " (valid: ", divisors(common), ")"));
  }
  if (p.ep() > 1 && e.n_routed_experts() == 0)
    fail("parallel.ep", p.ep(), "needs an MoE model (model.moe.n_routed_experts > 0); valid: 1");
  if (e.n_routed_experts() > 0 && e.n_routed_experts() % p.ep() != 0)
    fail("parallel.ep", p.ep(),
         concat("must divide model.moe.n_routed_experts = ", e.n_routed_experts(),
                " (valid: ", divisors(e.n_routed_experts()), ")"));
}

void check_data(const config::DataConfig& d) {
  if (d.dataset_dir().empty()) fail("data.dataset_dir", "\"\"", "must name a prepared dataset");
  positive("data.seq_len", d.seq_len());
  positive("data.micro_batch_size", d.micro_batch_size());
  positive("data.grad_accum_steps", d.grad_accum_steps());
}

void check_optimizer(const config::OptimizerConfig& o) {
  positive("optimizer.lr", o.lr());
  if (!(o.beta1() >= 0 && o.beta1() < 1)) fail("optimizer.beta1", o.beta1(), "must be in [0, 1)");
  if (!(o.beta2() >= 0 && o.beta2() < 1)) fail("optimizer.beta2", o.beta2(), "must be in [0, 1)");
  positive("optimizer.eps", o.eps());
  non_negative("optimizer.weight_decay", o.weight_decay());
  non_negative("optimizer.grad_clip", o.grad_clip());
}

void check_schedule(const config::ScheduleConfig& s) {
  positive("schedule.total_steps", s.total_steps());
  non_negative("schedule.warmup_steps", s.warmup_steps());
  if (s.warmup_steps() > s.total_steps()) {
    fail("schedule.warmup_steps", s.warmup_steps(),
         concat("must be <= schedule.total_steps = ", s.total_steps()));
  }
  in_range("schedule.min_lr_ratio", s.min_lr_ratio(), 0.0f, 1.0f, "[0, 1]");
  if (!(s.decay_fraction() > 0 && s.decay_fraction() <= 1))
    fail("schedule.decay_fraction", s.decay_fraction(), "must be in (0, 1]");
  non_negative("schedule.mtp_loss_weight", s.mtp_loss_weight());
  for (int i = 0; i < s.mtp_loss_weight_changes_size(); ++i) {
    const auto& c = s.mtp_loss_weight_changes(i);
    const std::string path = concat("schedule.mtp_loss_weight_changes[", i, "]");
    non_negative(path + ".from_step", c.from_step());
    if (i > 0 && c.from_step() <= s.mtp_loss_weight_changes(i - 1).from_step()) {
      fail(path + ".from_step", c.from_step(),
           concat("must be > the previous entry's from_step = ",
                  s.mtp_loss_weight_changes(i - 1).from_step(),
                  " (entries are sorted by strictly increasing from_step)"));
    }
    non_negative(path + ".weight", c.weight());
  }
}

void check_logging(const config::LoggingConfig& l) {
  if (l.run_dir().empty()) fail("logging.run_dir", "\"\"", "must name a directory");
  positive("logging.log_interval", l.log_interval());
  non_negative("logging.val_interval", l.val_interval());
  non_negative("logging.val_batches", l.val_batches());
  non_negative("logging.val_sequences", l.val_sequences());
}

void validate_impl(const config::RunConfig& cfg) {
  check_finite(cfg, "");  // first, so that range checks never see NaN
  check_model(cfg.model());
  check_moe(cfg.model().moe(), cfg.model().num_hidden_layers());
  check_parallel(cfg);
  check_data(cfg.data());
  check_optimizer(cfg.optimizer());
  check_muon(cfg);
  check_schedule(cfg.schedule());
  non_negative("checkpoint.interval", cfg.checkpoint().interval());
  non_negative("checkpoint.keep_last", cfg.checkpoint().keep_last());
  check_logging(cfg.logging());
  in_range("threads", cfg.threads(), 0, kMaxThreads,
           concat("[0, ", kMaxThreads, "] (0 = one per core)"));
  try {
    parse_device(cfg.device());
  } catch (const Error&) {
    fail("device", concat("\"", cfg.device(), "\""), "must be cpu, cuda or cuda:N (docs/gpu.md)");
  }
}

// Where the field at `path` ("a.b[2].c") was written in the parsed file, as "FILE:L:C", or
// "" when it was not written there (a default).
std::string locate_field(const pb::TextFormat::ParseInfoTree& root, const std::string& path,
                         const std::string& source) {
  const pb::TextFormat::ParseInfoTree* tree = &root;
  const pb::Descriptor* d = config::RunConfig::descriptor();
  const auto parts = split(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string name = parts[i];
    int index = -1;
    if (const size_t br = name.find('['); br != std::string::npos) {
      index = std::stoi(name.substr(br + 1));
      name.resize(br);
    }
    const pb::FieldDescriptor* f = d ? d->FindFieldByName(name) : nullptr;
    if (!f) return "";
    if (i + 1 == parts.size()) {
      const auto loc = tree->GetLocation(f, index);
      return loc.line < 0 ? "" : location(source, loc.line, loc.column);
    }
    tree = tree->GetTreeForNested(f, index);
    if (!tree) return "";
    d = f->message_type();
  }
  return "";
}

void fill_defaults(pb::Message* msg) {
  const pb::Descriptor* d = msg->GetDescriptor();
  const pb::Reflection* r = msg->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int j = 0; j < r->FieldSize(*msg, f); ++j)
          fill_defaults(r->MutableRepeatedMessage(msg, f, j));
      }
      continue;
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      fill_defaults(r->MutableMessage(msg, f));
      continue;
    }
    if (r->HasField(*msg, f)) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(msg, f, f->default_value_int32());
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(msg, f, f->default_value_int64());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(msg, f, f->default_value_uint32());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(msg, f, f->default_value_uint64());
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(msg, f, f->default_value_float());
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(msg, f, f->default_value_double());
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(msg, f, f->default_value_bool());
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnum(msg, f, f->default_value_enum());
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        r->SetString(msg, f, f->default_value_string());
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }
}

}  // namespace

config::RunConfig parse_config_text(const std::string& text, const std::string& source_name) {
  return parse_impl(text, source_name, nullptr);
}

void apply_override(config::RunConfig& cfg, const std::string& assignment) {
  auto error = [&](const std::string& why) {
    return Error(concat("--set ", assignment, ": ", why));
  };
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw error("expected FIELD.PATH=VALUE, e.g. model.hidden_size=512");
  const std::string value = assignment.substr(eq + 1);
  const auto parts = split(assignment.substr(0, eq), '.');

  pb::Message* msg = &cfg;
  std::string where;  // the path walked so far
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const std::string in = where.empty() ? "the run config" : where;
    if (parts[i].empty()) throw error(concat("empty field name in ", in));
    const pb::FieldDescriptor* f = d->FindFieldByName(parts[i]);
    if (!f) {
      throw error(
          concat("unknown field '", parts[i], "' in ", in, unknown_field_hint(d, parts[i])));
    }
    if (!where.empty()) where += '.';
    where += parts[i];
    const bool last = i + 1 == parts.size();
    const bool is_msg = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE;
    if (f->is_repeated()) {
      throw error(concat("'", where,
                         "' is a repeated field, which --set cannot change; write it in the "
                         "config file"));
    }
    if (last && is_msg) {
      throw error(concat("'", where, "' is a message; set one of its fields (valid: ",
                         field_names(f->message_type()), ")"));
    }
    if (!last && !is_msg) {
      throw error(concat("'", where, "' is a ", f->type_name(),
                         ", not a message, so it has no field '", parts[i + 1], "'"));
    }
    if (last) {
      const std::string why = set_scalar(msg, f, value);
      if (!why.empty()) throw error(why);
      return;
    }
    msg = msg->GetReflection()->MutableMessage(msg, f);
  }
}

void validate_config(const config::RunConfig& cfg) {
  validate_impl(cfg);
}

config::RunConfig load_config(const std::string& path, std::span<const std::string> overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(concat("config '", path, "' is a directory; expected a *.pbtxt file"));
  const std::string text = data::read_file(path, data::kMaxTextFileBytes, "config file");

  pb::TextFormat::ParseInfoTree tree;
  config::RunConfig cfg = parse_impl(text, path, &tree);
  for (const std::string& o : overrides) apply_override(cfg, o);
  try {
    validate_impl(cfg);
  } catch (const ConfigProblem& p) {
    // Blame the last override that set the field, else the line that wrote it, else the file.
    for (auto it = overrides.rbegin(); it != overrides.rend(); ++it) {
      if (override_path(*it) == p.path) throw Error(concat("--set ", *it, ": ", p.what()));
    }
    const std::string at = locate_field(tree, p.path, path);
    throw Error(concat(at.empty() ? path : at, ": ", p.what()));
  }
  return cfg;
}

config::RunConfig resolve_defaults(const config::RunConfig& cfg) {
  config::RunConfig out = cfg;
  fill_defaults(&out);
  return out;
}

std::string config_to_text(const config::RunConfig& cfg) {
  std::string out;
  pb::TextFormat::Printer printer;
  MOETRON_CHECK(printer.PrintToString(resolve_defaults(cfg), &out), "printing the config");
  return out;
}

int head_dim(const config::ModelConfig& m) {
  return m.head_dim() > 0 ? m.head_dim() : m.hidden_size() / m.num_attention_heads();
}

int rotary_dim(const config::ModelConfig& m) {
  return static_cast<int>(
      std::lround(head_dim(m) * static_cast<double>(m.partial_rotary_factor())));
}

int kv_heads(const config::ModelConfig& m) {
  return m.num_key_value_heads() == 0 ? m.num_attention_heads() : m.num_key_value_heads();
}

config::ModelConfig::LayerType layer_type(const config::ModelConfig& m, int64_t index) {
  const int pattern = m.layer_types_size();
  if (pattern == 0) return config::ModelConfig::ATTENTION;
  const int64_t main = std::min<int64_t>(index, m.num_hidden_layers() - 1);
  return m.layer_types(static_cast<int>(main % pattern));
}

bool has_layer_type(const config::ModelConfig& m, config::ModelConfig::LayerType t) {
  if (m.layer_types_size() == 0) return t == config::ModelConfig::ATTENTION;
  for (int i = 0; i < m.layer_types_size(); ++i)
    if (m.layer_types(i) == t) return true;
  return false;
}

ConfigArgs parse_config_args(std::span<const std::string> args) {
  ConfigArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--set") {
      if (i + 1 == args.size()) throw Error("--set needs an argument: --set a.b=value");
      out.overrides.push_back(args[++i]);
    } else if (a.starts_with("--set=")) {
      out.overrides.push_back(a.substr(6));
    } else if (out.path.empty() && !a.starts_with('-')) {
      out.path = a;
    } else {
      out.rest.push_back(a);
    }
  }
  for (const std::string& o : out.overrides) {
    const size_t eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(concat("--set ", o, ": expected a.b=value, e.g. --set model.hidden_size=512"));
  }
  if (out.path.empty()) throw Error("missing the CONFIG file argument");
  return out;
}

}  // namespace moetron
