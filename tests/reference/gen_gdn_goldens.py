#!/usr/bin/python3
"""Writes the Gated DeltaNet HDF5 goldens (tests/reference/goldens/gdn_*.h5) from the PyTorch
reference in gdn.py (the Qwen3-Next / Qwen3.5 linear-attention mixer, naive recurrence).

    /usr/bin/python3 tests/reference/gen_gdn_goldens.py [--out DIR] [--check]

Same conventions as gen_goldens.py (its Writer and layer_grads are reused): a fixed seed per
file, float32 data, no timestamps, byte-reproducible. See the Gated DeltaNet section of
README.md. Every run recomputes each file in float64 from the stored inputs and prints how far
the stored fp32 values are from it; --check runs gdn.self_check() first (the recurrence
against the chunked form, fp32 vs fp64 gradients, the conv against F.conv1d).
"""

from __future__ import annotations

import os
import sys

import h5py
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gdn  # noqa: E402
import gen_goldens as gg  # noqa: E402

GENERATOR = "tests/reference/gen_gdn_goldens.py"
INTERMEDIATES = ("q_normed", "k_normed", "v", "g", "beta", "core")


class Writer(gg.Writer):
    """gen_goldens.Writer with this script's name in the `generator` attribute."""

    def __init__(self, path: str, attrs: dict):
        super().__init__(path, attrs, generator=GENERATOR)


def gdn_attrs(cfg: gdn.GdnConfig, B: int, T: int, seed: int) -> dict:
    return dict(batch=B, seq_len=T, hidden_size=cfg.hidden_size,
                linear_num_key_heads=cfg.linear_num_key_heads,
                linear_key_head_dim=cfg.linear_key_head_dim,
                linear_num_value_heads=cfg.linear_num_value_heads,
                linear_value_head_dim=cfg.linear_value_head_dim,
                linear_conv_kernel_dim=cfg.linear_conv_kernel_dim,
                rms_norm_eps=float(cfg.rms_norm_eps), l2_norm_eps=float(gdn.L2_EPS),
                q_scale=float(cfg.q_scale), seed=seed)


def gen_gdn(out, fname, seed, B, T, cfg: gdn.GdnConfig, intermediates: bool):
    g = torch.Generator().manual_seed(seed)
    x = gg.randn(g, B, T, cfg.hidden_size)
    params = gdn.init_params(cfg, g)
    y, dy, gin, gpar = gg.layer_grads(lambda i, p: gdn.gdn(i["x"], p, "", cfg)[0], {"x": x},
                                      params, g)
    with torch.no_grad():
        parts = gdn.gdn_parts(x, params, "", cfg)  # the same fp32 computation, for the states
    assert torch.equal(parts["y"], y.detach())
    w = Writer(os.path.join(out, fname), gdn_attrs(cfg, B, T, seed))
    for k, v in params.items():
        w.put(f"params/{k}", v)
    w.put("inputs/x", x)
    w.put("inputs/dy", dy)
    w.put("outputs/y", y)
    w.put("outputs/final_state", parts["final_state"])
    if intermediates:
        for k in INTERMEDIATES:
            w.put(f"outputs/{k}", parts[k])
    w.put("grads/x", gin["x"])
    for k, v in gpar.items():
        w.put(f"grads/params/{k}", v)
    w.close()
    alpha, beta = parts["g"].exp(), parts["beta"]
    print(f"  {fname}: alpha [{alpha.min().item():.3f}, {alpha.max().item():.3f}] "
          f"beta [{beta.min().item():.3f}, {beta.max().item():.3f}] "
          f"|y|max={y.abs().max().item():.4g} |S|max={parts['final_state'].abs().max().item():.4g} "
          f"|grad x|max={gin['x'].abs().max().item():.4g}")


def recheck(path, cfg: gdn.GdnConfig) -> float:
    """Recomputes the file in float64 from its stored inputs and params; returns the worst
    |stored - exact| / max |exact| over every output and gradient."""
    with h5py.File(path, "r") as f:
        x = torch.from_numpy(f["inputs/x"][()]).double().requires_grad_(True)
        dy = torch.from_numpy(f["inputs/dy"][()]).double()
        p = {k: torch.from_numpy(f[f"params/{k}"][()]).double().requires_grad_(True)
             for k in gdn.param_shapes(cfg)}
        parts = gdn.gdn_parts(x, p, "", cfg)
        (parts["y"] * dy).sum().backward()
        exact = {f"outputs/{k}": parts[k] for k in ("y", "final_state") + INTERMEDIATES
                 if f"outputs/{k}" in f}
        exact["grads/x"] = x.grad
        exact.update({f"grads/params/{k}": v.grad for k, v in p.items()})
        return max(gdn._rel(torch.from_numpy(f[k][()]), v.detach()) for k, v in exact.items())


def cases():
    """(file, seed, B, T, GdnConfig, store intermediates)."""
    return [
        # T = 100: one full chunk of 64 and a partial one; Hv = 2 Hk (GQA-like sharing).
        ("gdn_small.h5", 7001, 2, 100,
         gdn.GdnConfig(hidden_size=32, linear_num_key_heads=2, linear_key_head_dim=16,
                       linear_num_value_heads=4, linear_value_head_dim=24,
                       linear_conv_kernel_dim=4, rms_norm_eps=1e-6), True),
        ("gdn_mha.h5", 7002, 1, 70,
         gdn.GdnConfig(hidden_size=24, linear_num_key_heads=2, linear_key_head_dim=8,
                       linear_num_value_heads=2, linear_value_head_dim=8,
                       linear_conv_kernel_dim=3, rms_norm_eps=1e-6), False),
    ]


def self_check():
    gdn.self_check({f: (B, T, c) for f, _, B, T, c, _ in cases()})


def main():
    out = gg.setup(self_check)
    names = []
    for fname, seed, B, T, cfg, inter in cases():
        gen_gdn(out, fname, seed, B, T, cfg, inter)
        names.append(fname)
    for fname, _, _, _, cfg, _ in cases():
        print(f"  {fname}: stored fp32 vs float64 recomputation, worst "
              f"{recheck(os.path.join(out, fname), cfg):.1e} (relative to the largest entry)")
    gg.print_sizes(out, names)


if __name__ == "__main__":
    main()
