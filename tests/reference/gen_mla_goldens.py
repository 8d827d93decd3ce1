#!/usr/bin/python3
"""Writes the MLA HDF5 goldens (tests/reference/goldens/mla_*.h5) from the PyTorch reference in
mla.py (DeepSeek-V2/V3 multi-head latent attention, optional YaRN).

    /usr/bin/python3 tests/reference/gen_mla_goldens.py [--out DIR] [--check]

Same conventions as gen_goldens.py (its Writer and layer_grads are reused): a fixed seed per
file, float32 data, no timestamps, byte-reproducible. See the MLA section of README.md.
--check runs mla.self_check() first: the absorbed form against the expanded one, fp32 vs fp64
gradients, the YaRN frequencies against a scalar re-derivation, Hugging Face's interleave path
against the native rotation, and the no-YaRN tables against model.rope_cos_sin.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_goldens as gg  # noqa: E402
import mla  # noqa: E402

GENERATOR = "tests/reference/gen_mla_goldens.py"
B, T = 2, 33


class Writer(gg.Writer):
    """gen_goldens.Writer with this script's name in the `generator` attribute."""

    def __init__(self, path: str, attrs: dict):
        super().__init__(path, attrs, generator=GENERATOR)


def mla_attrs(cfg: mla.MlaConfig, seed: int) -> dict:
    y = mla.yarn_of(cfg.yarn)
    a = dict(batch=B, seq_len=T, hidden_size=cfg.hidden_size, heads=cfg.heads,
             q_lora_rank=cfg.q_lora_rank, kv_lora_rank=cfg.kv_lora_rank,
             qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim,
             v_head_dim=cfg.v_head_dim, rope_theta=float(cfg.rope_theta),
             rope_style=cfg.rope_style, rms_norm_eps=float(cfg.rms_norm_eps))
    # No scaling: every yarn_* is 0 (yarn_factor 0 means none).
    a.update(yarn_factor=float(y.factor) if y else 0.0,
             yarn_original_max_position_embeddings=int(y.original_max_position_embeddings) if y else 0,
             yarn_beta_fast=float(y.beta_fast) if y else 0.0,
             yarn_beta_slow=float(y.beta_slow) if y else 0.0,
             yarn_mscale=float(y.mscale) if y else 0.0,
             yarn_mscale_all_dim=float(y.mscale_all_dim) if y else 0.0)
    a.update(softmax_scale=float(mla.softmax_scale(cfg)),
             attention_factor=float(mla.attention_factor(cfg)), seed=seed)
    return a


def gen_mla(out, fname, seed, cfg: mla.MlaConfig):
    g = torch.Generator().manual_seed(seed)
    x = gg.randn(g, B, T, cfg.hidden_size)
    params = mla.init_params(cfg, g)  # matrices N(0, 0.3), norms 1 + N(0, 0.2)
    y, dy, gin, gpar = gg.layer_grads(lambda i, p: mla.mla(i["x"], p, "", cfg), {"x": x}, params, g)
    cos, sin = mla.rope_tables(T, cfg.qk_rope_head_dim, cfg.rope_theta, cfg.yarn)
    w = Writer(os.path.join(out, fname), mla_attrs(cfg, seed))
    for k, v in params.items():
        w.put(f"params/{k}", v)
    w.put("inputs/x", x)
    w.put("inputs/dy", dy)
    w.put("outputs/y", y)
    w.put("outputs/rope_cos", cos)
    w.put("outputs/rope_sin", sin)
    w.put("grads/x", gin["x"])
    for k, v in gpar.items():
        w.put(f"grads/params/{k}", v)
    w.close()
    print(f"  {fname}: softmax_scale={mla.softmax_scale(cfg):.9g} "
          f"attention_factor={mla.attention_factor(cfg):.9g} |y|max={y.abs().max().item():.4g} "
          f"|grad x|max={gin['x'].abs().max().item():.4g}")


def cases():
    """(file, seed, MlaConfig)."""
    common = dict(hidden_size=32, heads=4, kv_lora_rank=16, qk_nope_head_dim=8,
                  qk_rope_head_dim=4, v_head_dim=12, rope_theta=10000.0, rms_norm_eps=1e-6)
    return [
        ("mla_q_lora_interleaved.h5", 5001,
         mla.MlaConfig(q_lora_rank=24, rope_style=mla.INTERLEAVED, **common)),
        ("mla_no_q_lora_rotate_half.h5", 5002,
         mla.MlaConfig(q_lora_rank=0, rope_style=mla.ROTATE_HALF, **common)),
        ("mla_yarn.h5", 5003,
         mla.MlaConfig(q_lora_rank=24, rope_style=mla.INTERLEAVED,
                       yarn=mla.YarnConfig(factor=4.0, original_max_position_embeddings=16,
                                           beta_fast=32.0, beta_slow=1.0, mscale=1.0,
                                           mscale_all_dim=0.8), **common)),
    ]


def self_check():
    mla.self_check({f: c for f, _, c in cases()})


def main():
    out = gg.setup(self_check)
    names = []
    for fname, seed, cfg in cases():
        gen_mla(out, fname, seed, cfg)
        names.append(fname)
    gg.print_sizes(out, names)


if __name__ == "__main__":
    main()
