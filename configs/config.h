// The run-config layer: parse a text-format RunConfig, apply `--set a.b=value` overrides,
// validate the rules that tie fields together, and print the resolved config.
//
// Every failure is a moetron::Error that names the culprit: `FILE:LINE:COL: message` for
// syntax errors, the field path, the bad value and what would be valid for the rest.
// docs/config.md describes the rules.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "configs/moetron.pb.h"

namespace moetron {

// Parses protobuf text format. `source_name` prefixes error locations (usually the path).
config::RunConfig parse_config_text(const std::string& text, const std::string& source_name);

// Applies one "a.b.c=value" assignment to any singular scalar field (ints, floats, bool,
// string, enum by name); intermediate messages are created on demand.
void apply_override(config::RunConfig& cfg, const std::string& assignment);

// Semantic checks; throws on the first problem: "<field path> = <value>: <what is valid>".
void validate_config(const config::RunConfig& cfg);

// Reads `path`, parses it, applies `overrides` in order, then validates. Validation errors
// point at the line of the offending field in the file, or at the override that set it.
config::RunConfig load_config(const std::string& path, std::span<const std::string> overrides);

// Text format with every default made explicit (all sub-messages present, every optional
// scalar set), so that the printed config alone reproduces the run. Parses back equal.
std::string config_to_text(const config::RunConfig& cfg);

// A copy of `cfg` with every unset optional scalar set to its default (what config_to_text
// prints). Note: `model.moe` becomes present; n_routed_experts == 0 still means dense.
config::RunConfig resolve_defaults(const config::RunConfig& cfg);

// model.head_dim, or hidden_size / num_attention_heads when it is 0.
int head_dim(const config::ModelConfig& m);
// The dims of an ATTENTION head RoPE rotates: head_dim * partial_rotary_factor.
int rotary_dim(const config::ModelConfig& m);
int kv_heads(const config::ModelConfig& m);  // num_key_value_heads, 0 meaning heads
// The mixer of layer `index` (Hugging Face numbering: MTP blocks follow the main layers and take
// the last main layer's), from the repeated model.layer_types pattern (validated: its length
// divides num_hidden_layers).
config::ModelConfig::LayerType layer_type(const config::ModelConfig& m, int64_t index);
// Whether any block (MTP blocks included) has mixer `t`.
bool has_layer_type(const config::ModelConfig& m, config::ModelConfig::LayerType t);

// The common command-line shape `CONFIG [--set a.b=v | --set=a.b=v ...] [other args]`.
struct ConfigArgs {
  std::string path;                    // the first positional argument
  std::vector<std::string> overrides;  // "a.b=v", in command-line order
  std::vector<std::string> rest;       // everything else, in order, for the caller
};
// Throws if CONFIG is missing or a --set lacks its "a.b=value" argument.
ConfigArgs parse_config_args(std::span<const std::string> args);

}  // namespace moetron
