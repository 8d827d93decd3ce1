"""Checks a `moetron export` directory against its checkpoint and against moetron's logits, with
code independent of moetron's C++: the safetensors reader beside this file, h5py for the
checkpoint, torch for the bf16 rounding, and the PyTorch reference models (model.py, moe.py,
mla.py; qwen35.py with gdn.py) for the forward pass. Run by tests/checkpoint/test_export.cc;
exits non-zero with the reason. The layouts of docs/export.md: glm4_moe (GQA attention),
deepseek_v3 (MLA layers) and qwen3_5_moe_text (Gated DeltaNet and gated attention layers);
which one the export must be follows from the checkpoint's config (model.layer_types MLA:
deepseek_v3, else GATED_DELTANET: qwen3_5_moe_text, else glm4_moe).

    python3 tests/reference/check_export.py --export DIR --checkpoint CKPT.h5 \
        --tokens TOKENS.i32 --logits LOGITS.f32 --batch B --seq T --dtype fp32|bf16 --rtol R

What it checks:
  * the index lists every tensor of every shard exactly once, total_size is right, the files
    tile exactly (safetensors_reader.read_dir);
  * the tensor names are exactly the checkpoint's plus, for each MTP layer L+k, the copies
    model.layers.{L+k}.embed_tokens.weight and .shared_head.head.weight (and lm_head.weight for
    a tied model), each equal to its source; qwen3_5_moe_text instead (qwen_sources): the
    checkpoint's names with linear_attn.in_proj_q/_k/_v fused as in_proj_qkv and conv1d_q/_k/_v
    as conv1d.weight, mlp.shared_experts.* as mlp.shared_expert.*, no mlp.gate.
    e_score_correction_bias (which must then be all zero in the checkpoint), the MTP block
    (checkpoint layer L) as mtp.pre_fc_norm_embedding / mtp.pre_fc_norm_hidden / mtp.fc /
    mtp.norm (enorm, hnorm, eh_proj, shared_head.norm) and mtp.layers.0.* (the rest), no
    per-module embedding or head copies, plus lm_head.weight for a tied model;
  * every value is the checkpoint's: bitwise for fp32 and for the router (mlp.gate.*, always
    F32), and bitwise torch's round-to-nearest-even bf16 of it for bf16; for glm4_moe, q_proj/
    k_proj of an INTERLEAVED checkpoint with each head's rows (2j, 2j+1) moved to (j, j + hd/2);
    for deepseek_v3 every tensor as stored (no permutation: rope_interleave says the layout);
    for qwen3_5_moe_text every tensor as stored, a fused one the rows of its parts in q, k, v
    order (conv1d reshaped [C, K] -> [C, 1, K]);
  * config.json describes the model: glm4_moe (partial_rotary_factor 1.0, ...), or deepseek_v3
    (DeepseekV3ForCausalLM; the MLA widths, q_lora_rank null for 0, head_dim ==
    qk_rope_head_dim, num_key_value_heads == heads, rope_interleave == the checkpoint's
    rope_style is INTERLEAVED, rope_scaling (transformers 4) and rope_parameters (5) agreeing,
    YaRN's fields as the checkpoint's model.rope_scaling, max_position_embeddings = factor x
    original_max_position_embeddings under YaRN, else data.seq_len; the other model and MoE
    fields as the checkpoint's), or qwen3_5_moe_text (Qwen3_5MoeForCausalLM; layer_types the
    checkpoint's pattern expanded, linear_attention / full_attention; rope_parameters with
    rope_type default, rope_theta and partial_rotary_factor written out; head_dim, KV heads,
    the linear_* widths, num_experts, shared_expert_intermediate_size = n_shared x
    moe_intermediate_size, mtp_num_hidden_layers, router_aux_loss_coef = aux_loss_coeff; and the
    checkpoint trained with what the architecture hardcodes: SOFTMAX, norm_topk_prob,
    routed_scaling_factor 1, one group, every layer MoE, a gated shared expert, zero-centred
    norms, gated attention with q/k norms, ROTATE_HALF, no YaRN);
  * the reference model, built from config.json alone and fed the exported weights, gives
    moetron's main-head logits on the same tokens: max |ref - moetron| <= rtol * max |moetron|.
    glm4_moe: model.py's attention with glm4_moe's rotate_half RoPE; deepseek_v3: mla.py's MLA
    in moe.py's model (rope_interleave true: the interleaved pairs rotated natively, false:
    rotate_half; YaRN from rope_parameters; the latent norms with eps 1e-6 as transformers
    hardcodes, the block norms with rms_norm_eps); qwen3_5_moe_text: qwen35.py (gdn.py's
    Gated DeltaNet on in_proj_qkv split back, gated attention with zero-centred q/k norms and
    partial rotate_half RoPE, softmax top-k renormalised MoE with the sigmoid-gated shared
    expert, zero-centred RMSNorms).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mla  # noqa: E402
import model as ref  # noqa: E402
import moe  # noqa: E402
import qwen35  # noqa: E402
from safetensors_reader import read_dir  # noqa: E402


def fail(msg: str):
    print(f"check_export: FAIL: {msg}")
    sys.exit(1)


def reference_config(cfg: dict) -> moe.MoeModelConfig:
    """The reference model glm4_moe's config.json describes (transformers' Glm4MoeForCausalLM)."""
    want = {"model_type": "glm4_moe", "hidden_act": "silu", "attention_bias": False,
            "use_qk_norm": False, "tie_word_embeddings": False, "architectures": ["Glm4MoeForCausalLM"]}
    for k, v in want.items():
        if cfg.get(k) != v:
            fail(f"config.json {k} is {cfg.get(k)!r}, expected {v!r}")
    rp = cfg["rope_parameters"]
    if rp.get("rope_type") != "default" or rp.get("partial_rotary_factor") != 1.0 or \
            cfg.get("partial_rotary_factor") != 1.0 or rp.get("rope_theta") != cfg.get("rope_theta"):
        fail(f"config.json RoPE fields: {rp}, partial_rotary_factor {cfg.get('partial_rotary_factor')}")
    if cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"]:
        fail("config.json head_dim * num_attention_heads != hidden_size")
    return moe.MoeModelConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], intermediate_size=cfg["intermediate_size"],
        rope_theta=cfg["rope_parameters"]["rope_theta"], rope_style=ref.ROTATE_HALF,
        rms_norm_eps=cfg["rms_norm_eps"], tie_word_embeddings=False,
        num_nextn_predict_layers=cfg["num_nextn_predict_layers"],
        n_routed_experts=cfg["n_routed_experts"], num_experts_per_tok=cfg["num_experts_per_tok"],
        moe_intermediate_size=cfg["moe_intermediate_size"], n_shared_experts=cfg["n_shared_experts"],
        first_k_dense_replace=cfg["first_k_dense_replace"],
        routed_scaling_factor=cfg["routed_scaling_factor"], scoring_func=moe.SIGMOID,
        norm_topk_prob=cfg["norm_topk_prob"], n_group=cfg["n_group"], topk_group=cfg["topk_group"])


# transformers' DeepseekV3Attention builds q_a_layernorm / kv_a_layernorm with this eps, whatever
# rms_norm_eps says (DeepSeek-V3's own q_norm / kv_norm too); moetron's MLA does the same.
LATENT_NORM_EPS = 1e-6
YARN_FIELDS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale",
               "mscale_all_dim")


def parse_textproto(text: str) -> dict:
    """moetron's saved config (protobuf text format, one field per line, as config_to_text
    prints it) -> nested dict: field -> list of values (str) or of sub-dicts."""
    root: dict = {}
    stack = [root]
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            sub: dict = {}
            stack[-1].setdefault(line[:-1].strip().rstrip(":").strip(), []).append(sub)
            stack.append(sub)
        elif line == "}":
            stack.pop()
            if not stack:
                fail(f"checkpoint config line {n}: unbalanced '}}'")
        elif ":" in line:
            k, v = line.split(":", 1)
            stack[-1].setdefault(k.strip(), []).append(v.strip())
        else:
            fail(f"checkpoint config line {n}: cannot read {line!r}")
    if len(stack) != 1:
        fail("checkpoint config: unclosed block")
    return root


def field(msg: dict, path: str):
    """The last value of a dotted field path (str, or dict for a message); None when absent."""
    for part in path.split("."):
        if msg is None or part not in msg:
            return None
        msg = msg[part][-1]
    return msg


def need(msg: dict, path: str) -> str:
    v = field(msg, path)
    if v is None:
        fail(f"the checkpoint's config has no {path}")
    return v


def f32(v) -> np.float32:
    return np.float32(float(v))


def check_deepseek_config(cfg: dict, saved: dict):
    """config.json against the checkpoint's config (saved, parse_textproto) for deepseek_v3."""
    want = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
            "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
            "scoring_func": "sigmoid", "topk_method": "noaux_tc"}
    for k, v in want.items():
        if cfg.get(k) != v:
            fail(f"config.json {k} is {cfg.get(k)!r}, expected {v!r}")
    if field(saved, "model.moe.scoring_func") not in (None, "SIGMOID"):
        fail("the checkpoint routes with softmax; deepseek_v3 is sigmoid only")
    # Integers and floats copied from the checkpoint's model config (floats as float32).
    ints = {"vocab_size": "model.vocab_size", "hidden_size": "model.hidden_size",
            "intermediate_size": "model.intermediate_size",
            "num_hidden_layers": "model.num_hidden_layers",
            "num_attention_heads": "model.num_attention_heads",
            "num_nextn_predict_layers": "model.num_nextn_predict_layers",
            "kv_lora_rank": "model.mla.kv_lora_rank", "qk_nope_head_dim": "model.mla.qk_nope_head_dim",
            "qk_rope_head_dim": "model.mla.qk_rope_head_dim", "v_head_dim": "model.mla.v_head_dim"}
    for k in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
              "n_shared_experts", "first_k_dense_replace", "n_group", "topk_group"):
        ints[k] = f"model.moe.{k}"
    for k, path in ints.items():
        if type(cfg.get(k)) is not int or cfg[k] != int(need(saved, path)):
            fail(f"config.json {k} is {cfg.get(k)!r}, the checkpoint's {path} is {need(saved, path)}")
    floats = {"rms_norm_eps": "model.rms_norm_eps", "rope_theta": "model.rope_theta",
              "routed_scaling_factor": "model.moe.routed_scaling_factor"}
    for k, path in floats.items():
        if not isinstance(cfg.get(k), (int, float)) or f32(cfg[k]) != f32(need(saved, path)):
            fail(f"config.json {k} is {cfg.get(k)!r}, the checkpoint's {path} is {need(saved, path)}")
    if cfg.get("norm_topk_prob") != (need(saved, "model.moe.norm_topk_prob") == "true"):
        fail(f"config.json norm_topk_prob is {cfg.get('norm_topk_prob')!r}")
    # MLA.
    q_lora = int(need(saved, "model.mla.q_lora_rank"))
    if cfg.get("q_lora_rank", "absent") != (q_lora if q_lora > 0 else None):
        fail(f"config.json q_lora_rank is {cfg.get('q_lora_rank', 'absent')!r}, expected "
             f"{q_lora if q_lora > 0 else None!r} (the checkpoint's q_lora_rank {q_lora}; 0 is null)")
    if cfg.get("num_key_value_heads") != cfg["num_attention_heads"]:
        fail(f"config.json num_key_value_heads is {cfg.get('num_key_value_heads')!r}, expected "
             f"num_attention_heads {cfg['num_attention_heads']} (MLA has a key per head)")
    if cfg.get("head_dim") != cfg["qk_rope_head_dim"]:
        fail(f"config.json head_dim is {cfg.get('head_dim')!r}, expected qk_rope_head_dim "
             f"{cfg['qk_rope_head_dim']} (the rotary width transformers' rotary embedding uses)")
    interleaved = need(saved, "model.rope_style") == "INTERLEAVED"
    if cfg.get("rope_interleave") is not interleaved:
        fail(f"config.json rope_interleave is {cfg.get('rope_interleave')!r}, the checkpoint's "
             f"rope_style is {need(saved, 'model.rope_style')}")
    # RoPE parameters: rope_scaling (transformers 4) and rope_parameters (5) must agree.
    rp, rs = cfg.get("rope_parameters"), cfg.get("rope_scaling", "absent")
    if not isinstance(rp, dict) or rp.get("rope_theta") != cfg["rope_theta"]:
        fail(f"config.json rope_parameters {rp!r}: rope_theta must be {cfg['rope_theta']}")
    factor = f32(field(saved, "model.rope_scaling.factor") or 1)
    if factor == 1:
        if rs is not None or rp != {"rope_type": "default", "rope_theta": cfg["rope_theta"]}:
            fail(f"config.json without YaRN: rope_scaling {rs!r} (expected null), rope_parameters {rp!r}")
        want_positions = int(need(saved, "data.seq_len"))
    else:
        if not isinstance(rs, dict) or set(rs) != {"type", "rope_type", *YARN_FIELDS} or \
                rs["type"] != "yarn" or rs["rope_type"] != "yarn":
            fail(f"config.json rope_scaling {rs!r}: expected type/rope_type yarn and {YARN_FIELDS}")
        if set(rp) != {"rope_type", "rope_theta", *YARN_FIELDS} or rp["rope_type"] != "yarn":
            fail(f"config.json rope_parameters {rp!r}: expected rope_type yarn, rope_theta, {YARN_FIELDS}")
        for k in YARN_FIELDS:
            if rs[k] != rp[k]:
                fail(f"config.json rope_scaling.{k} {rs[k]!r} != rope_parameters.{k} {rp[k]!r}")
            if f32(rp[k]) != f32(need(saved, f"model.rope_scaling.{k}")):
                fail(f"config.json rope_parameters.{k} is {rp[k]!r}, the checkpoint's "
                     f"model.rope_scaling.{k} is {need(saved, f'model.rope_scaling.{k}')}")
        if type(rp["original_max_position_embeddings"]) is not int:
            fail("config.json original_max_position_embeddings is not an integer")
        want_positions = float(rp["factor"]) * rp["original_max_position_embeddings"]
    if cfg.get("max_position_embeddings") != want_positions:
        fail(f"config.json max_position_embeddings is {cfg.get('max_position_embeddings')!r}, "
             f"expected {want_positions:g}" + (" (factor x original_max_position_embeddings)"
                                               if factor != 1 else " (data.seq_len)"))


def deepseek_reference_config(cfg: dict) -> moe.MoeModelConfig:
    """The reference model deepseek_v3's config.json describes (transformers'
    DeepseekV3ForCausalLM), from config.json alone: moe.py's model with mla.py's attention."""
    rp = cfg["rope_parameters"]
    yarn = None
    if rp["rope_type"] == "yarn":
        yarn = mla.YarnConfig(factor=float(rp["factor"]),
                              original_max_position_embeddings=rp["original_max_position_embeddings"],
                              beta_fast=float(rp["beta_fast"]), beta_slow=float(rp["beta_slow"]),
                              mscale=float(rp["mscale"]), mscale_all_dim=float(rp["mscale_all_dim"]))
    attn = mla.MlaConfig(
        hidden_size=cfg["hidden_size"], heads=cfg["num_attention_heads"],
        q_lora_rank=cfg["q_lora_rank"] or 0, kv_lora_rank=cfg["kv_lora_rank"],
        qk_nope_head_dim=cfg["qk_nope_head_dim"], qk_rope_head_dim=cfg["qk_rope_head_dim"],
        v_head_dim=cfg["v_head_dim"], rope_theta=rp["rope_theta"],
        rope_style=mla.INTERLEAVED if cfg["rope_interleave"] else mla.ROTATE_HALF,
        rms_norm_eps=LATENT_NORM_EPS, yarn=yarn)
    return moe.MoeModelConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], intermediate_size=cfg["intermediate_size"],
        rope_theta=rp["rope_theta"], rope_style=attn.rope_style,
        rms_norm_eps=cfg["rms_norm_eps"], tie_word_embeddings=False,
        num_nextn_predict_layers=cfg["num_nextn_predict_layers"],
        n_routed_experts=cfg["n_routed_experts"], num_experts_per_tok=cfg["num_experts_per_tok"],
        moe_intermediate_size=cfg["moe_intermediate_size"], n_shared_experts=cfg["n_shared_experts"],
        first_k_dense_replace=cfg["first_k_dense_replace"],
        routed_scaling_factor=cfg["routed_scaling_factor"], scoring_func=moe.SIGMOID,
        norm_topk_prob=cfg["norm_topk_prob"], n_group=cfg["n_group"], topk_group=cfg["topk_group"],
        mla=attn)


QWEN_LAYER_TYPES = {"GATED_DELTANET": qwen35.LINEAR, "ATTENTION": qwen35.FULL}


def check_qwen_config(cfg: dict, saved: dict):
    """config.json against the checkpoint's config (saved, parse_textproto) for
    qwen3_5_moe_text, and the checkpoint's settings that layout requires (transformers'
    Qwen3_5MoeForCausalLM has no switch for them: softmax top-k always renormalised, no routed
    scaling, no groups, a gated shared expert, zero-centred norms, gated attention with q/k
    norms)."""
    want = {"model_type": "qwen3_5_moe_text", "architectures": ["Qwen3_5MoeForCausalLM"],
            "hidden_act": "silu", "attention_bias": False,
            "tie_word_embeddings": field(saved, "model.tie_word_embeddings") == "true"}
    for k, v in want.items():
        if cfg.get(k) != v:
            fail(f"config.json {k} is {cfg.get(k)!r}, expected {v!r}")
    # What the architecture hardcodes must be what the checkpoint was trained with.
    required = {"model.moe.scoring_func": "SOFTMAX", "model.moe.norm_topk_prob": "true",
                "model.moe.first_k_dense_replace": "0", "model.moe.n_group": "1",
                "model.moe.shared_expert_gate": "true", "model.zero_centered_norms": "true",
                "model.rope_style": "ROTATE_HALF"}
    if "ATTENTION" in need_layer_types(saved):
        required.update({"model.attention_output_gate": "true", "model.qk_norm": "true"})
    for path, v in required.items():
        if field(saved, path) != v:
            fail(f"the checkpoint's {path} is {field(saved, path)}: qwen3_5_moe_text needs {v}")
    for path in ("model.moe.routed_scaling_factor", "model.rope_scaling.factor"):
        if f32(field(saved, path) or 1) != 1:
            fail(f"the checkpoint's {path} is {field(saved, path)}: qwen3_5_moe_text needs 1")
    if int(need(saved, "model.moe.n_shared_experts")) < 1:
        fail("the checkpoint has no shared expert: qwen3_5_moe_text always has one")
    heads = int(need(saved, "model.num_attention_heads"))
    head_dim = int(field(saved, "model.head_dim") or 0) or int(need(saved, "model.hidden_size")) // heads
    kv = int(field(saved, "model.num_key_value_heads") or 0) or heads
    ints = {"vocab_size": int(need(saved, "model.vocab_size")),
            "hidden_size": int(need(saved, "model.hidden_size")),
            "num_hidden_layers": int(need(saved, "model.num_hidden_layers")),
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
            "num_experts": int(need(saved, "model.moe.n_routed_experts")),
            "num_experts_per_tok": int(need(saved, "model.moe.num_experts_per_tok")),
            "moe_intermediate_size": int(need(saved, "model.moe.moe_intermediate_size")),
            "shared_expert_intermediate_size": int(need(saved, "model.moe.n_shared_experts"))
            * int(need(saved, "model.moe.moe_intermediate_size")),
            "mtp_num_hidden_layers": int(need(saved, "model.num_nextn_predict_layers")),
            "max_position_embeddings": int(need(saved, "data.seq_len"))}
    for k in ("linear_num_key_heads", "linear_key_head_dim", "linear_num_value_heads",
              "linear_value_head_dim", "linear_conv_kernel_dim"):
        ints[k] = int(need(saved, f"model.linear_attention.{k}"))
    for k, v in ints.items():
        if type(cfg.get(k)) is not int or cfg[k] != v:
            fail(f"config.json {k} is {cfg.get(k)!r}, the checkpoint's config gives {v}")
    floats = {"rms_norm_eps": "model.rms_norm_eps",
              "router_aux_loss_coef": "model.moe.aux_loss_coeff"}
    for k, path in floats.items():
        v = field(saved, path) or "0"
        if not isinstance(cfg.get(k), (int, float)) or f32(cfg[k]) != f32(v):
            fail(f"config.json {k} is {cfg.get(k)!r}, the checkpoint's {path} is {v}")
    # RoPE: rope_parameters in full (transformers' default partial_rotary_factor is 0.25).
    rp = cfg.get("rope_parameters")
    if not isinstance(rp, dict) or set(rp) != {"rope_type", "rope_theta", "partial_rotary_factor"} \
            or rp["rope_type"] != "default" or \
            f32(rp["rope_theta"]) != f32(need(saved, "model.rope_theta")) or \
            f32(rp["partial_rotary_factor"]) != f32(field(saved, "model.partial_rotary_factor") or 1):
        fail(f"config.json rope_parameters {rp!r}: expected rope_type default, rope_theta "
             f"{need(saved, 'model.rope_theta')}, partial_rotary_factor "
             f"{field(saved, 'model.partial_rotary_factor') or 1}")
    for k in ("rope_theta", "partial_rotary_factor"):
        if k in cfg and cfg[k] != rp[k]:
            fail(f"config.json top-level {k} {cfg[k]!r} differs from rope_parameters' {rp[k]!r}")
    if cfg.get("rope_scaling") is not None:
        fail(f"config.json rope_scaling {cfg['rope_scaling']!r}: transformers would take it over "
             "rope_parameters")
    rot = int(head_dim * float(rp["partial_rotary_factor"]))
    if abs(head_dim * f32(field(saved, "model.partial_rotary_factor") or 1) - rot) > 1e-3 or rot % 2:
        fail(f"int(head_dim * partial_rotary_factor) = {rot}: not the checkpoint's rotary width")
    L = ints["num_hidden_layers"]
    pattern = need_layer_types(saved)
    expect = [QWEN_LAYER_TYPES[pattern[l % len(pattern)]] for l in range(L)]
    if cfg.get("layer_types") != expect:
        fail(f"config.json layer_types {cfg.get('layer_types')!r}, the checkpoint's pattern "
             f"{pattern} over {L} layers gives {expect}")
    if ints["mtp_num_hidden_layers"] > 1:
        fail(f"mtp_num_hidden_layers {ints['mtp_num_hidden_layers']}: qwen3_5_moe_text names one MTP module")


def need_layer_types(saved: dict) -> list:
    """The checkpoint's model.layer_types pattern (every value a known Qwen mixer)."""
    pattern = (field(saved, "model") or {}).get("layer_types", [])
    if not pattern or any(t not in QWEN_LAYER_TYPES for t in pattern):
        fail(f"the checkpoint's model.layer_types {pattern}: qwen3_5_moe_text holds "
             f"{sorted(QWEN_LAYER_TYPES)} only")
    return pattern


# qwen3_5_moe_text's fused tensors: export name (under linear_attn.) -> the checkpoint's parts.
QWEN_FUSED = {"in_proj_qkv.weight": ("in_proj_q.weight", "in_proj_k.weight", "in_proj_v.weight"),
              "conv1d.weight": ("conv1d_q.weight", "conv1d_k.weight", "conv1d_v.weight")}
QWEN_MTP = {"enorm.weight": "mtp.pre_fc_norm_embedding.weight",
            "hnorm.weight": "mtp.pre_fc_norm_hidden.weight", "eh_proj.weight": "mtp.fc.weight",
            "shared_head.norm.weight": "mtp.norm.weight"}


def qwen_sources(ckpt: dict, L: int, tied: bool) -> dict:
    """Export name -> the checkpoint tensors whose rows it holds, in order (one for a copy),
    for qwen3_5_moe_text: in_proj_q/_k/_v fused as in_proj_qkv and conv1d_q/_k/_v as
    conv1d.weight [C, 1, K], mlp.shared_experts.* as mlp.shared_expert.*, no router bias, the
    MTP block (checkpoint layer L) under mtp.*, and no per-module copies of the embedding or the
    head (Qwen's MTP shares them)."""
    parts = {p: (fused, i) for fused, ps in QWEN_FUSED.items() for i, p in enumerate(ps)}
    mtp = f"model.layers.{L}."
    sources: dict = {}
    for name in sorted(ckpt):
        if name.endswith(".mlp.gate.e_score_correction_bias"):
            continue  # dropped: checked to be zero by the caller
        out = name
        m = re.match(r"(.*\.linear_attn\.)(.*)$", name)
        if m and m.group(2) in parts:
            fused, i = parts[m.group(2)]
            if i > 0:
                continue  # in the fused tensor, listed with its first part
            out = m.group(1) + fused
            src = [m.group(1) + p for p in QWEN_FUSED[fused]]
        else:
            src = [name]
        out = out.replace(".mlp.shared_experts.", ".mlp.shared_expert.")
        if out.startswith(mtp):
            rest = out[len(mtp):]
            out = QWEN_MTP.get(rest, "mtp.layers.0." + rest)
        elif re.match(r"model\.layers\.(\d+)\.", out) and int(out.split(".")[2]) > L:
            fail(f"the checkpoint has {name}: qwen3_5_moe_text holds one MTP module (layer {L})")
        if out in sources:
            fail(f"two checkpoint tensors export as {out}")
        sources[out] = src
    if tied:
        sources["lm_head.weight"] = ["model.embed_tokens.weight"]
    return sources


def bf16_round(a: np.ndarray) -> np.ndarray:
    """torch's float32 -> bfloat16 (round to nearest even), widened back to float32."""
    return torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy()


def rope_to_half(w: np.ndarray, head_dim: int) -> np.ndarray:
    """Rows (2j, 2j+1) of each head -> (j, j + hd/2)."""
    rows, cols = w.shape
    return w.reshape(rows // head_dim, head_dim // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def logits_of(params: dict, cfg: moe.MoeModelConfig, tokens: torch.Tensor) -> torch.Tensor:
    """The main head's logits [B*T, V] (model_loss without the loss)."""
    stats: dict = {}
    x = params["model.embed_tokens.weight"][tokens.long()]
    for l in range(cfg.num_hidden_layers):
        x = moe.block(x, params, f"model.layers.{l}.", cfg, l, stats)
    h = ref.rms_norm(x, params["model.norm.weight"], cfg.rms_norm_eps)
    return (h @ params["lm_head.weight"].t()).reshape(-1, cfg.vocab_size)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], required=True)
    ap.add_argument("--rtol", type=float, required=True)
    ap.add_argument("--min-shards", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    # Here, not at the top: check_transformers_export.py imports this module's config readers
    # in a venv without h5py.
    import h5py

    tensors, index = read_dir(a.export)
    shards = sorted(set(index["weight_map"].values()))
    if len(shards) < a.min_shards:
        fail(f"{len(shards)} shards, expected at least {a.min_shards}")
    for i, s in enumerate(shards):
        if s != f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors":
            fail(f"shard name {s}")
    with open(os.path.join(a.export, "config.json")) as f:
        hf = json.load(f)

    with h5py.File(a.checkpoint, "r") as f:
        saved = f.attrs["config"]
        saved = saved.decode() if isinstance(saved, bytes) else saved
        ckpt = {name: np.asarray(f["params"][name], dtype=np.float32) for name in f["params"]}
    # The layout follows from the checkpoint: MLA layers are deepseek_v3, Gated DeltaNet layers
    # qwen3_5_moe_text, attention alone glm4_moe.
    layer_types = parse_textproto(saved).get("model", [{}])[-1].get("layer_types", [])
    deepseek = "MLA" in layer_types
    qwen = not deepseek and "GATED_DELTANET" in layer_types
    if deepseek and set(layer_types) != {"MLA"}:
        fail(f"the checkpoint mixes layer types {sorted(set(layer_types))}: no export layout holds them")
    if qwen:
        if hf.get("model_type") != "qwen3_5_moe_text":
            fail(f"config.json model_type is {hf.get('model_type')!r}: the checkpoint has Gated "
                 "DeltaNet layers, expected 'qwen3_5_moe_text'")
        check_qwen_config(hf, parse_textproto(saved))
        cfg = qwen35.config_from_json(hf)
    elif deepseek:
        if hf.get("model_type") != "deepseek_v3":
            fail(f"config.json model_type is {hf.get('model_type')!r}: the checkpoint has MLA "
                 "layers, expected 'deepseek_v3'")
        check_deepseek_config(hf, parse_textproto(saved))
        cfg = deepseek_reference_config(hf)
    else:
        cfg = reference_config(hf)
    L = cfg.num_hidden_layers
    D = hf["mtp_num_hidden_layers"] if qwen else cfg.num_nextn_predict_layers
    interleaved = re.search(r"rope_style:\s*INTERLEAVED", saved) is not None
    tied = re.search(r"tie_word_embeddings:\s*true", saved) is not None
    if f"num_nextn_predict_layers: {D}" not in saved or f"num_hidden_layers: {L}" not in saved:
        fail("config.json's layers differ from the checkpoint's config")

    # Names: the checkpoint's, plus the MTP copies (and the untied head); qwen3_5_moe_text:
    # qwen_sources' renaming and fusing. Each name maps to the checkpoint tensors it holds.
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    if qwen:
        sources = qwen_sources(ckpt, L, tied)
        # The router bias is not exported (the architecture has none): it must not matter.
        for name in ckpt:
            if name.endswith("e_score_correction_bias") and np.any(ckpt[name] != 0):
                fail(f"the checkpoint's {name} is not zero (max |b| {np.max(np.abs(ckpt[name])):.3g}): "
                     "qwen3_5_moe_text has no router bias and the export drops it, so the exported "
                     "model would route otherwise than the checkpoint")
    else:
        sources = {name: [name] for name in ckpt}
        for k in range(D):
            sources[f"model.layers.{L + k}.embed_tokens.weight"] = ["model.embed_tokens.weight"]
            sources[f"model.layers.{L + k}.shared_head.head.weight"] = [head]
        if tied:
            sources["lm_head.weight"] = ["model.embed_tokens.weight"]
    if set(tensors) != set(sources):
        fail(f"tensor names: missing {sorted(set(sources) - set(tensors))[:5]}, "
             f"unexpected {sorted(set(tensors) - set(sources))[:5]}")
    if set(index["weight_map"]) != set(sources):
        fail("the index does not list exactly the export's tensors")

    # Values (deepseek_v3: as stored; glm4_moe: INTERLEAVED q/k rows permuted to rotate_half;
    # qwen3_5_moe_text: as stored, the fused tensors the rows of their parts in order, conv1d
    # [C, K] -> [C, 1, K]).
    head_dim = hf["head_dim"]
    permute = interleaved and not deepseek and not qwen
    for name, src in sources.items():
        dtype, got = tensors[name]
        want = np.concatenate([ckpt[s] for s in src], axis=0) if len(src) > 1 else ckpt[src[0]]
        if qwen and name.endswith(".linear_attn.conv1d.weight"):
            want = want[:, None, :]
        if permute and re.search(r"self_attn\.[qk]_proj\.weight$", name):
            want = rope_to_half(want, head_dim)
        router = name.endswith("mlp.gate.weight") or name.endswith("e_score_correction_bias")
        want_dtype = "F32" if router or a.dtype == "fp32" else "BF16"
        if dtype != want_dtype:
            fail(f"{name} is {dtype}, expected {want_dtype}")
        if want_dtype == "BF16":
            want = bf16_round(want)
        if got.shape != want.shape or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            fail(f"{name}: values differ from the checkpoint's {' + '.join(src)} "
                 f"(max abs {np.max(np.abs(got - want)) if got.shape == want.shape else 'shape'})")

    # Logits: the reference on the exported weights vs moetron's.
    n = a.batch * a.seq
    tokens = torch.from_numpy(np.fromfile(a.tokens, dtype=np.int32).reshape(a.batch, a.seq))
    theirs = np.fromfile(a.logits, dtype=np.float32).reshape(n, cfg.vocab_size)
    shapes = qwen35.param_shapes(cfg) if qwen else moe.param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if name.startswith(f"model.layers.") and int(name.split(".")[2]) >= L:
            continue  # MTP modules: not on the main head's path
        if name not in tensors:
            fail(f"{name}: not in the export, the reference needs it")
        if tuple(tensors[name][1].shape) != tuple(shape):
            fail(f"{name}: shape {tensors[name][1].shape}, the reference needs {shape}")
        params[name] = torch.from_numpy(tensors[name][1].copy())
    with torch.no_grad():
        mine = (qwen35.logits_of(params, cfg, tokens) if qwen else logits_of(params, cfg, tokens)).numpy()
    diff = np.abs(mine - theirs)
    scale = float(np.max(np.abs(theirs)))
    rel = float(np.max(diff)) / scale
    print(f"check_export: {hf['model_type']}, {len(tensors)} tensors in {len(shards)} shards ({a.dtype}), "
          f"logits [{n}, {cfg.vocab_size}]: max |diff| {np.max(diff):.3e}, max |logit| {scale:.3f}, "
          f"relative {rel:.3e} (tolerance {a.rtol:g})")
    if not rel <= a.rtol:
        worst = int(np.argmax(diff.max(axis=1)))
        fail(f"logits differ: relative {rel:.3e} > {a.rtol:g} (worst row {worst})")
    print("check_export: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
