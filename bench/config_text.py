"""The MLA settings of a moetron run config, read from its protobuf text (configs/moetron.proto)
for bench/run_bench.sh, which hands them to bench/torch_reference.py; and the Gated DeltaNet
hybrid's settings (hybrid_settings) for bench/run_hybrid_bench.sh, which hands them to
bench/transformers_peer.py.

moetron_bench's JSON line has no MLA fields yet; until it does, run_bench.sh reads them from the
config file it passed to moetron_bench (run_bench.sh takes no --set overrides, so the file is
what moetron_bench built). A small reader of the text format, enough for moetron's configs:
fields `name: value`, messages `name { ... }` (or `name: { ... }`, `<...>`), lists `[a, b]`,
`#` comments, quoted strings. Absent fields take configs/moetron.proto's defaults, copied below.

    python3 bench/config_text.py CONFIG           # prints the settings as JSON (null: no MLA layers)
    python3 bench/config_text.py --hybrid CONFIG  # the hybrid's settings as JSON
"""

from __future__ import annotations

import json
import re
import sys

# configs/moetron.proto: ModelConfig.MlaConfig and the ModelConfig fields the MLA path reads.
MLA_DEFAULTS = {"q_lora_rank": 0, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
                "qk_rope_head_dim": 16, "v_head_dim": 32}
LAYER_TYPES = {"0": "ATTENTION", "1": "MLA", "2": "GATED_DELTANET", "ATTENTION": "ATTENTION",
               "MLA": "MLA", "GATED_DELTANET": "GATED_DELTANET"}
ROPE_THETA_DEFAULT, RMS_NORM_EPS_DEFAULT, ROPE_SCALING_FACTOR_DEFAULT = 10000.0, 1e-6, 1.0
# configs/moetron.proto: what hybrid_settings reads (moetron_bench's JSON lacks these).
MODEL_DEFAULTS = {"head_dim": 0, "partial_rotary_factor": 1.0, "rope_theta": ROPE_THETA_DEFAULT,
                  "rms_norm_eps": RMS_NORM_EPS_DEFAULT, "attention_output_gate": False,
                  "qk_norm": False, "zero_centered_norms": False}
GDN_DEFAULTS = {"linear_num_key_heads": 2, "linear_key_head_dim": 32, "linear_num_value_heads": 4,
                "linear_value_head_dim": 32, "linear_conv_kernel_dim": 4}
OPTIMIZER_DEFAULTS = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "decay_norms_and_embeddings": False}

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}\[\]<>:,;]|[^\s{}\[\]<>:,;#"\']+')


class ConfigError(Exception):
    pass


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfigError(f"cannot read {text[pos:pos + 20]!r}")
        t = m.group(0)
        pos = m.end()
        if not t.isspace() and not t.startswith("#"):
            out.append(t)
    return out


def parse(text: str) -> dict:
    """Protobuf text -> nested dict: field -> list of values (str; strings keep their quotes)
    or of sub-dicts. Repeated fields (and list syntax) append."""
    toks = tokens(text)
    pos = 0

    def message(end: str | None) -> dict:
        nonlocal pos
        msg: dict = {}
        while True:
            if pos == len(toks):
                if end is None:
                    return msg
                raise ConfigError(f"unclosed message: expected {end!r}")
            t = toks[pos]
            if t == end:
                pos += 1
                return msg
            if t in (",", ";"):
                pos += 1
                continue
            name = t
            pos += 1
            if pos < len(toks) and toks[pos] == ":":
                pos += 1
            if pos == len(toks):
                raise ConfigError(f"field {name!r} has no value")
            t = toks[pos]
            if t in ("{", "<"):
                pos += 1
                msg.setdefault(name, []).append(message("}" if t == "{" else ">"))
            elif t == "[":
                pos += 1
                while toks[pos] != "]":
                    if toks[pos] == ",":
                        pos += 1
                        continue
                    if toks[pos] in ("{", "<"):
                        pos += 1
                        msg.setdefault(name, []).append(message("}" if toks[pos - 1] == "{" else ">"))
                    else:
                        msg.setdefault(name, []).append(toks[pos])
                        pos += 1
                pos += 1
            else:
                msg.setdefault(name, []).append(t)
                pos += 1

    return message(None)


def last(msg: dict | None, name: str, default=None):
    if msg is None or name not in msg:
        return default
    return msg[name][-1]


def layer_kinds(raw: list) -> list[str]:
    try:
        return [LAYER_TYPES[v] for v in raw]
    except KeyError as e:
        raise ConfigError(f"model.layer_types: unknown value {e.args[0]!r}") from None


def _typed(value: str, default):
    if isinstance(default, bool):
        if value not in ("true", "false", "True", "False", "1", "0", "t", "f"):
            raise ConfigError(f"not a bool: {value!r}")
        return value in ("true", "True", "1", "t")
    return type(default)(value)


def _fields(msg: dict, defaults: dict, where: str) -> dict:
    if not isinstance(msg, dict):
        raise ConfigError(f"{where} is not a message")
    return {k: _typed(last(msg, k, None), v) if k in msg else v for k, v in defaults.items()}


def hybrid_settings(path: str) -> dict:
    """The settings of a Gated DeltaNet hybrid that moetron_bench's JSON does not report: the
    mixer of every layer, head_dim, partial RoPE, rope_theta, rms_norm_eps, the gated
    attention's switches, model.linear_attention, model.moe.shared_expert_gate and the AdamW
    fields besides lr / weight_decay / grad_clip (schema defaults for absent fields)."""
    with open(path) as f:
        root = parse(f.read())
    model = last(root, "model", {})
    out = _fields(model, MODEL_DEFAULTS, "model")
    out["layer_types"] = layer_kinds(model.get("layer_types", []))
    if not out["layer_types"]:
        out["layer_types"] = ["ATTENTION"] * int(last(model, "num_hidden_layers", 4))
    out["linear_attention"] = _fields(last(model, "linear_attention", {}), GDN_DEFAULTS,
                                      "model.linear_attention")
    out["shared_expert_gate"] = _fields(last(model, "moe", {}), {"shared_expert_gate": False},
                                        "model.moe")["shared_expert_gate"]
    out["optimizer"] = _fields(last(root, "optimizer", {}), OPTIMIZER_DEFAULTS, "optimizer")
    if float(last(last(model, "rope_scaling", {}), "factor", ROPE_SCALING_FACTOR_DEFAULT)) != 1.0:
        raise ConfigError("model.rope_scaling (YaRN): the peer does not take it")
    return out


def mla_settings(path: str) -> dict | None:
    """None when every layer is ATTENTION (GQA); else {"layer_types": "MLA", "mla": {the five
    widths}}. Refuses what torch_reference.py cannot build the same: a mix of ATTENTION and MLA
    layers, YaRN, a rope_theta or rms_norm_eps other than the schema's defaults (it takes neither)."""
    with open(path) as f:
        text = f.read()
    if not re.search(r"\blayer_types\b", text):
        return None  # every layer ATTENTION, whatever else the file holds
    root = parse(text)
    model = last(root, "model", {})
    if not isinstance(model, dict):
        raise ConfigError("model is not a message")
    raw = model.get("layer_types", [])
    kinds = layer_kinds(raw)
    if "GATED_DELTANET" in kinds:
        raise ConfigError("Gated DeltaNet layers: torch_reference.py has none (bench/run_hybrid_bench.sh)")
    if "MLA" not in kinds:
        return None
    if set(kinds) != {"MLA"}:
        raise ConfigError(f"model.layer_types {kinds}: the reference builds all-MLA or all-ATTENTION "
                          "models, not a mix")
    rs = last(model, "rope_scaling", {})
    if float(last(rs, "factor", ROPE_SCALING_FACTOR_DEFAULT)) != ROPE_SCALING_FACTOR_DEFAULT:
        raise ConfigError("model.rope_scaling (YaRN): torch_reference.py does not take it")
    for key, default in (("rope_theta", ROPE_THETA_DEFAULT), ("rms_norm_eps", RMS_NORM_EPS_DEFAULT)):
        if float(last(model, key, default)) != default:
            raise ConfigError(f"model.{key}: torch_reference.py does not take it (only the "
                              f"default {default:g})")
    block = last(model, "mla", {})
    if not isinstance(block, dict):
        raise ConfigError("model.mla is not a message")
    widths = {k: int(last(block, k, v)) for k, v in MLA_DEFAULTS.items()}
    unknown = set(block) - set(MLA_DEFAULTS)
    if unknown:
        raise ConfigError(f"model.mla: unknown fields {sorted(unknown)}")
    return {"layer_types": "MLA", "mla": widths}


def main():
    args = sys.argv[1:]
    hybrid = args[:1] == ["--hybrid"]
    if hybrid:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    try:
        print(json.dumps(hybrid_settings(args[0]) if hybrid else mla_settings(args[0])))
    except (ConfigError, OSError, ValueError) as e:
        sys.exit(f"config_text.py: {args[0]}: {e}")


if __name__ == "__main__":
    main()
