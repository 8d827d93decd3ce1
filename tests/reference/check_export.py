"""Checks a `moetron export` directory against its checkpoint and against moetron's logits, with
code independent of moetron's C++: the safetensors reader beside this file, h5py for the
checkpoint, torch for the bf16 rounding, and the PyTorch reference model (model.py, moe.py) for
the forward pass. Run by tests/checkpoint/test_export.cc; exits non-zero with the reason.

    python3 tests/reference/check_export.py --export DIR --checkpoint CKPT.h5 \
        --tokens TOKENS.i32 --logits LOGITS.f32 --batch B --seq T --dtype fp32|bf16 --rtol R

What it checks:
  * the index lists every tensor of every shard exactly once, total_size is right, the files
    tile exactly (safetensors_reader.read_dir);
  * the tensor names are exactly the checkpoint's plus, for each MTP layer L+k, the copies
    model.layers.{L+k}.embed_tokens.weight and .shared_head.head.weight (and lm_head.weight for
    a tied model), each equal to its source;
  * every value is the checkpoint's: bitwise for fp32 and for the router (mlp.gate.*, always
    F32), and bitwise torch's round-to-nearest-even bf16 of it for bf16; q_proj/k_proj of an
    INTERLEAVED checkpoint with each head's rows (2j, 2j+1) moved to (j, j + hd/2);
  * config.json describes the model (glm4_moe, partial_rotary_factor 1.0, ...);
  * the reference model, built from config.json alone with glm4_moe's rotate_half RoPE and fed
    the exported weights, gives moetron's main-head logits on the same tokens:
    max |ref - moetron| <= rtol * max |moetron|.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model as ref  # noqa: E402
import moe  # noqa: E402
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

    tensors, index = read_dir(a.export)
    shards = sorted(set(index["weight_map"].values()))
    if len(shards) < a.min_shards:
        fail(f"{len(shards)} shards, expected at least {a.min_shards}")
    for i, s in enumerate(shards):
        if s != f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors":
            fail(f"shard name {s}")
    with open(os.path.join(a.export, "config.json")) as f:
        hf = json.load(f)
    cfg = reference_config(hf)
    L, D = cfg.num_hidden_layers, cfg.num_nextn_predict_layers

    with h5py.File(a.checkpoint, "r") as f:
        saved = f.attrs["config"]
        saved = saved.decode() if isinstance(saved, bytes) else saved
        ckpt = {name: np.asarray(f["params"][name], dtype=np.float32) for name in f["params"]}
    interleaved = re.search(r"rope_style:\s*INTERLEAVED", saved) is not None
    tied = re.search(r"tie_word_embeddings:\s*true", saved) is not None
    if f"num_nextn_predict_layers: {D}" not in saved or f"num_hidden_layers: {L}" not in saved:
        fail("config.json's layers differ from the checkpoint's config")

    # Names: the checkpoint's, plus the MTP copies (and the untied head).
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    sources = {name: name for name in ckpt}
    for k in range(D):
        sources[f"model.layers.{L + k}.embed_tokens.weight"] = "model.embed_tokens.weight"
        sources[f"model.layers.{L + k}.shared_head.head.weight"] = head
    if tied:
        sources["lm_head.weight"] = "model.embed_tokens.weight"
    if set(tensors) != set(sources):
        fail(f"tensor names: missing {sorted(set(sources) - set(tensors))[:5]}, "
             f"unexpected {sorted(set(tensors) - set(sources))[:5]}")
    if set(index["weight_map"]) != set(sources):
        fail("the index does not list exactly the export's tensors")

    # Values.
    head_dim = hf["head_dim"]
    for name, src in sources.items():
        dtype, got = tensors[name]
        want = ckpt[src]
        if interleaved and re.search(r"self_attn\.[qk]_proj\.weight$", name):
            want = rope_to_half(want, head_dim)
        router = name.endswith("mlp.gate.weight") or name.endswith("e_score_correction_bias")
        want_dtype = "F32" if router or a.dtype == "fp32" else "BF16"
        if dtype != want_dtype:
            fail(f"{name} is {dtype}, expected {want_dtype}")
        if want_dtype == "BF16":
            want = bf16_round(want)
        if got.shape != want.shape or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            fail(f"{name}: values differ from the checkpoint's {src} "
                 f"(max abs {np.max(np.abs(got - want)) if got.shape == want.shape else 'shape'})")

    # Logits: the reference on the exported weights vs moetron's.
    n = a.batch * a.seq
    tokens = torch.from_numpy(np.fromfile(a.tokens, dtype=np.int32).reshape(a.batch, a.seq))
    theirs = np.fromfile(a.logits, dtype=np.float32).reshape(n, cfg.vocab_size)
    shapes = moe.param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if name.startswith(f"model.layers.") and int(name.split(".")[2]) >= L:
            continue  # MTP modules: not on the main head's path
        if tuple(tensors[name][1].shape) != tuple(shape):
            fail(f"{name}: shape {tensors[name][1].shape}, the reference needs {shape}")
        params[name] = torch.from_numpy(tensors[name][1].copy())
    with torch.no_grad():
        mine = logits_of(params, cfg, tokens).numpy()
    diff = np.abs(mine - theirs)
    scale = float(np.max(np.abs(theirs)))
    rel = float(np.max(diff)) / scale
    print(f"check_export: {len(tensors)} tensors in {len(shards)} shards ({a.dtype}), "
          f"logits [{n}, {cfg.vocab_size}]: max |diff| {np.max(diff):.3e}, max |logit| {scale:.3f}, "
          f"relative {rel:.3e} (tolerance {a.rtol:g})")
    if not rel <= a.rtol:
        worst = int(np.argmax(diff.max(axis=1)))
        fail(f"logits differ: relative {rel:.3e} > {a.rtol:g} (worst row {worst})")
    print("check_export: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
