#!/usr/bin/python3
"""Writes the Muon optimizer goldens (tests/reference/goldens/muon_step*.h5) from the PyTorch
reference in muon.py (Moonlight's Muon step, Newton-Schulz in float32).

    /usr/bin/python3 tests/reference/gen_muon_goldens.py [--out DIR] [--check]

Same conventions as gen_goldens.py (its Writer is reused): a fixed seed per file, float32 data,
no timestamps, byte-reproducible. See the Muon section of README.md. --check runs
muon.self_check() first (stacked vs per-slice NS, fp32 vs fp64 steps, singular values of NS).
Every run also recomputes each file in float64 from its stored fp32 inputs and prints how far
the stored outputs are from that.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_goldens as gg  # noqa: E402
import muon  # noqa: E402

GENERATOR = "tests/reference/gen_muon_goldens.py"
STEPS = 2

# name -> (shape, gradient std at step 0, at step 1): tall, wide, square, an expert matrix.
MATRICES = {
    "model.layers.0.mlp.gate_proj.weight": ((48, 32), 0.05, 0.03),
    "model.layers.0.self_attn.o_proj.weight": ((32, 48), 0.02, 0.05),
    "model.layers.0.self_attn.kv_b_proj.weight": ((24, 24), 0.1, 0.05),
    "model.layers.1.mlp.experts.3.down_proj.weight": ((32, 16), 0.01, 0.02),
}
INIT_STD = 0.1


class Writer(gg.Writer):
    """gen_goldens.Writer with this script's name in the `generator` attribute."""

    def __init__(self, path: str, attrs: dict):
        super().__init__(path, attrs, generator=GENERATOR)


def cases():
    """(file, seed, hyper-parameters of muon.muon_step)."""
    common = dict(lr=0.02, mu=0.95, wd=0.1, rms_scale=0.2)
    return [
        ("muon_step.h5", 6001, dict(nesterov=True, ns_steps=5, **common)),
        ("muon_step_plain.h5", 6002, dict(nesterov=False, ns_steps=3, **common)),
    ]


def draw(seed):
    """Initial weights, then step 0's gradients, then step 1's, each in MATRICES order."""
    g = torch.Generator().manual_seed(seed)
    W0 = {k: gg.randn(g, *s, std=INIT_STD) for k, (s, _, _) in MATRICES.items()}
    grads = [{k: gg.randn(g, *s, std=stds[t]) for k, (s, *stds) in MATRICES.items()}
             for t in range(STEPS)]
    return W0, grads


def run(W0, grads, hp, dtype=torch.float32):
    """STEPS Muon steps from W0 (zero momentum) in `dtype`; returns a dict of results."""
    p = {k: v.to(dtype).clone() for k, v in W0.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    res = {}
    for t, G in enumerate(grads):
        rec = {}
        muon.muon_step(p, {k: v.to(dtype) for k, v in G.items()}, m, record=rec, **hp)
        if t == 0:
            res["step0_params"] = {k: v.clone() for k, v in p.items()}
            res["step0_momentum"] = {k: v.clone() for k, v in m.items()}
            res["step0_u"] = {k: u for k, (u, _) in rec.items()}
            res["step0_ortho"] = {k: o for k, (_, o) in rec.items()}
    res["params"], res["momentum"] = p, m
    return res


def gen_muon(out, fname, seed, hp):
    W0, grads = draw(seed)
    res = run(W0, grads, hp)
    attrs = dict(lr=float(hp["lr"]), momentum=float(hp["mu"]), nesterov=int(hp["nesterov"]),
                 ns_steps=int(hp["ns_steps"]), weight_decay=float(hp["wd"]),
                 rms_scale=float(hp["rms_scale"]), ns_a=muon.NS_COEFFS[0],
                 ns_b=muon.NS_COEFFS[1], ns_c=muon.NS_COEFFS[2], ns_eps=muon.NS_EPS,
                 steps=STEPS, seed=seed, init_std=INIT_STD)
    w = Writer(os.path.join(out, fname), attrs)
    for k in MATRICES:
        w.put(f"params/{k}", W0[k])
    for t in range(STEPS):
        for k in MATRICES:
            w.put(f"grads/step{t}/{k}", grads[t][k])
    for key in ("params", "momentum", "step0_params", "step0_momentum", "step0_u", "step0_ortho"):
        for k in MATRICES:
            w.put(f"outputs/{key}/{k}", res[key][k])
    w.close()

    # Report: the size of the updates, NS(U)'s singular values, and the stored fp32 outputs
    # against float64 recomputed from the stored (fp32) inputs.
    r64 = run({k: v.double() for k, v in W0.items()}, grads, hp, dtype=torch.float64)
    print(f"  {fname}: nesterov={int(hp['nesterov'])} ns_steps={hp['ns_steps']}")
    worst = {}
    for k, ((mr, nc), _, _) in MATRICES.items():
        s = torch.linalg.svdvals(res["step0_ortho"][k].double())
        upd = (res["params"][k] - W0[k]).abs().max().item()
        for key in ("params", "momentum", "step0_params", "step0_ortho"):
            worst[key] = max(worst.get(key, 0.0), muon._rel(res[key][k], r64[key][k]))
        print(f"    {k} [{mr}, {nc}]: scale lr*0.2*sqrt(max) = "
              f"{muon.update_scale(hp['lr'], hp['rms_scale'], (mr, nc)):.6g}, "
              f"sigma(O_0) in [{s.min().item():.4f}, {s.max().item():.4f}], "
              f"max |W_2 - W_0| = {upd:.4g}")
    print("    stored fp32 vs fp64 recomputation (max abs diff / max abs): "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) < 1e-5, worst


def self_check():
    muon.self_check({k: s for k, (s, _, _) in MATRICES.items()})


def main():
    out = gg.setup(self_check)
    names = []
    for fname, seed, hp in cases():
        gen_muon(out, fname, seed, hp)
        names.append(fname)
    gg.print_sizes(out, names)


if __name__ == "__main__":
    main()
