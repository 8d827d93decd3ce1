#!/usr/bin/python3
"""Writes the gated-attention HDF5 golden (tests/reference/goldens/gated_attention.h5) from the
PyTorch reference in qwen35.py (Qwen3-Next / Qwen3.5's full-attention layer: per-head
zero-centred q/k norms, partial rotate_half RoPE, output gate).

    /usr/bin/python3 tests/reference/gen_qwen_goldens.py [--out DIR] [--check]

Same conventions as gen_goldens.py (its Writer and layer_grads are reused): a fixed seed per
file, float32 data, no timestamps, byte-reproducible. See the gated attention section of
README.md. Every run recomputes the file in float64 from the stored inputs and prints how far
the stored fp32 values are from it; --check runs qwen35.self_check() first (partial RoPE vs
complex multiplication, gated attention vs a per-head loop, ...). The Qwen MoE layer with a
gated shared expert is a case of gen_moe_goldens.py (moe_qwen_shared_gate.h5).
"""

from __future__ import annotations

import os
import sys

import h5py
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_goldens as gg  # noqa: E402
import model as ref  # noqa: E402
import qwen35  # noqa: E402

GENERATOR = "tests/reference/gen_qwen_goldens.py"
ATTN = "self_attn."


class Writer(gg.Writer):
    """gen_goldens.Writer with this script's name in the `generator` attribute."""

    def __init__(self, path: str, attrs: dict):
        super().__init__(path, attrs, generator=GENERATOR)


def param_shapes(cfg: qwen35.Qwen35Config) -> dict:
    """The gated attention's local names -> shapes, in qwen35's order: q_proj [2 H hd, d]
    (per head [q | gate] rows), k_proj, v_proj [KV hd, d], q_norm, k_norm [hd],
    o_proj [d, H hd]."""
    return {n[len(ATTN):]: s for n, s in qwen35.layer_param_shapes(cfg, qwen35.FULL).items()
            if n.startswith(ATTN)}


def init_params(cfg: qwen35.Qwen35Config, g: torch.Generator, std: float = 0.3,
                norm_std: float = 0.2) -> dict:
    """Matrices N(0, std) (as mla.init_params), the zero-centred norm weights (offsets from 1)
    N(0, norm_std), drawn in param_shapes order."""
    return {n: (norm_std if n.endswith("norm.weight") else std) * torch.randn(*s, generator=g)
            for n, s in param_shapes(cfg).items()}


def attrs_of(cfg: qwen35.Qwen35Config, B: int, T: int, seed: int) -> dict:
    return dict(batch=B, seq_len=T, hidden_size=cfg.hidden_size, heads=cfg.num_attention_heads,
                kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                partial_rotary_factor=float(cfg.partial_rotary_factor),
                rope_theta=float(cfg.rope_theta), rms_norm_eps=float(cfg.rms_norm_eps),
                seed=seed,
                # Implied by the layer, written out for the C++ test:
                rope_style=ref.ROTATE_HALF, rotary_dim=cfg.rotary_dim,
                softmax_scale=float(cfg.head_dim) ** -0.5, output_gate=1, qk_norm=1,
                zero_centered_norms=1)


def gen_gated_attention(out, fname, seed, B, T, cfg: qwen35.Qwen35Config):
    g = torch.Generator().manual_seed(seed)
    x = gg.randn(g, B, T, cfg.hidden_size)
    params = init_params(cfg, g)
    y, dy, gin, gpar = gg.layer_grads(lambda i, p: qwen35.gated_attention(i["x"], p, "", cfg),
                                      {"x": x}, params, g)
    cos, sin = ref.rope_cos_sin(T, cfg.rotary_dim, cfg.rope_theta)  # partial_rope's tables
    w = Writer(os.path.join(out, fname), attrs_of(cfg, B, T, seed))
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
    with torch.no_grad():  # how much the gate and the norms do
        hd, H = cfg.head_dim, cfg.num_attention_heads
        gate = torch.sigmoid((x @ params["q_proj.weight"].t()).view(B, T, H, 2 * hd)[..., hd:])
    print(f"  {fname}: rotary_dim={cfg.rotary_dim} |y|max={y.abs().max().item():.4g} "
          f"|grad x|max={gin['x'].abs().max().item():.4g} sigmoid(gate) 1st-99th pct "
          f"[{gate.quantile(0.01).item():.3f}, {gate.quantile(0.99).item():.3f}] "
          f"1+q_norm in [{1 + params['q_norm.weight'].min().item():.3f}, "
          f"{1 + params['q_norm.weight'].max().item():.3f}]")


def recheck(path, cfg: qwen35.Qwen35Config) -> float:
    """Recomputes the file in float64 from its stored inputs and params; returns the worst
    |stored - exact| / max |exact| over the output and every gradient."""
    with h5py.File(path, "r") as f:
        x = torch.from_numpy(f["inputs/x"][()]).double().requires_grad_(True)
        dy = torch.from_numpy(f["inputs/dy"][()]).double()
        p = {k: torch.from_numpy(f[f"params/{k}"][()]).double().requires_grad_(True)
             for k in param_shapes(cfg)}
        y = qwen35.gated_attention(x, p, "", cfg)
        (y * dy).sum().backward()
        exact = {"outputs/y": y, "grads/x": x.grad}
        exact.update({f"grads/params/{k}": v.grad for k, v in p.items()})
        return max(qwen35._rel(torch.from_numpy(f[k][()]), v.detach()) for k, v in exact.items())


def cases():
    """(file, seed, B, T, Qwen35Config)."""
    return [
        # head_dim 12 != hidden / heads = 8; rotary_dim 6 (3 pairs), the other 6 dims unrotated;
        # T = 37 is no multiple of the usual block sizes.
        ("gated_attention.h5", 8001, 2, 37,
         qwen35.Qwen35Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             head_dim=12, partial_rotary_factor=0.5, rope_theta=10000.0,
                             rms_norm_eps=1e-6)),
    ]


def main():
    out = gg.setup(qwen35.self_check)
    names = []
    for fname, seed, B, T, cfg in cases():
        gen_gated_attention(out, fname, seed, B, T, cfg)
        names.append(fname)
    for fname, _, _, _, cfg in cases():
        print(f"  {fname}: stored fp32 vs float64 recomputation, worst "
              f"{recheck(os.path.join(out, fname), cfg):.1e} (relative to the largest entry)")
    gg.print_sizes(out, names)


if __name__ == "__main__":
    main()
