"""Compares muon.py's fp32 Moonlight Muon step with PyTorch's own torch.optim.Muon (by hand, in
the venv of setup_transformers_venv.sh; torch.optim.Muon exists from torch 2.9,
pytorch/pytorch#160213; not part of CI):

    .cache/venv-transformers/bin/python tests/reference/check_torch_muon.py [--h5 FILE]

It takes the initial weights and step-0 gradients of goldens/muon_step.h5 (read with Debian's
/usr/bin/python3 + h5py when this interpreter has no h5py) and runs ONE step with

  A. muon.py, fp32 (should be the file's outputs/step0_params whatever the torch version),
  B. torch.optim.Muon(lr, weight_decay, momentum, nesterov, ns_steps, adjust_lr_fn=
     "match_rms_adamw") as shipped (its Newton-Schulz runs in bfloat16),
  C. the same torch.optim.Muon with its _zeropower_via_newtonschulz swapped for the identical
     code minus the bfloat16 cast (fp32), which isolates the bf16 rounding from the rest,
  D. muon.py with Newton-Schulz in bfloat16 (Moonlight's own `X = G.bfloat16()`),

and prints, per matrix, max |x - A| / max |A| for the new weights and for the update
W_new - W_old (and ||.||_F ratios of the update), and torch's momentum buffer over muon.py's
(torch keeps an EMA: (1 - mu) times Moonlight's sum). --steps 2 also runs step 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import muon  # noqa: E402

_DUMP = r"""
import h5py, json, numpy, sys
f = h5py.File(sys.argv[1], "r")
d = {}
f.visititems(lambda n, o: d.__setitem__(n.replace("/", "|"), o[()]) if isinstance(o, h5py.Dataset) else None)
numpy.savez(sys.argv[2], **d)
print(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}))
"""


def load_h5(path: str, python: str):
    """{dataset path: np.ndarray}, {attr: value}; through `python` (with h5py) if needed."""
    try:
        import h5py
    except ImportError:
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "d.npz")
            attrs = json.loads(subprocess.run([python, "-c", _DUMP, path, npz], check=True,
                                              capture_output=True, text=True).stdout)
            with np.load(npz) as z:
                data = {k.replace("|", "/"): z[k] for k in z.files}
        return data, attrs
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda n, o: data.__setitem__(n, o[()])
                     if isinstance(o, h5py.Dataset) else None)
        return data, {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}


def ns_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz without the bfloat16 cast."""
    a, b, c = ns_coefficients
    x = grad.to(dtype=torch.float32, copy=True)
    if grad.size(0) > grad.size(1):
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        upd = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, upd, x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


def run_torch(W0, grads_seq, hp, fp32_ns=False):
    import torch.optim._muon as tm
    orig = tm._zeropower_via_newtonschulz
    if fp32_ns:
        tm._zeropower_via_newtonschulz = ns_fp32
    try:
        ps = {k: torch.nn.Parameter(v.clone()) for k, v in W0.items()}
        opt = torch.optim.Muon(list(ps.values()), lr=hp["lr"], weight_decay=hp["wd"],
                               momentum=hp["mu"], nesterov=hp["nesterov"],
                               ns_steps=hp["ns_steps"], adjust_lr_fn="match_rms_adamw")
        for G in grads_seq:
            for k, p in ps.items():
                p.grad = G[k].clone()
            opt.step()
        return ({k: p.detach().clone() for k, p in ps.items()},
                {k: opt.state[p]["momentum_buffer"].clone() for k, p in ps.items()})
    finally:
        tm._zeropower_via_newtonschulz = orig


def run_ref(W0, grads_seq, hp, ns_dtype=None):
    p = {k: v.clone() for k, v in W0.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    for G in grads_seq:
        muon.muon_step(p, G, m, ns_dtype=ns_dtype, **hp)
    return p, m


def rel_max(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def rel_fro(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h5", default=os.path.join(HERE, "goldens", "muon_step.h5"))
    ap.add_argument("--python", default="/usr/bin/python3", help="an interpreter with h5py")
    ap.add_argument("--steps", type=int, default=1, choices=(1, 2))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not hasattr(torch.optim, "Muon"):
        sys.exit(f"torch {torch.__version__} has no torch.optim.Muon (needs >= 2.9)")
    data, attrs = load_h5(args.h5, args.python)
    names = sorted(k[len("params/"):] for k in data if k.startswith("params/"))
    hp = dict(lr=attrs["lr"], mu=attrs["momentum"], nesterov=bool(attrs["nesterov"]),
              ns_steps=int(attrs["ns_steps"]), wd=attrs["weight_decay"],
              rms_scale=attrs["rms_scale"])
    assert hp["rms_scale"] == 0.2, "torch's match_rms_adamw hardcodes 0.2"
    W0 = {k: torch.from_numpy(data[f"params/{k}"].copy()) for k in names}
    grads_seq = [{k: torch.from_numpy(data[f"grads/step{t}/{k}"].copy()) for k in names}
                 for t in range(args.steps)]
    print(f"torch {torch.__version__}, {os.path.relpath(args.h5)} (goldens by torch "
          f"{attrs['torch_version']}), {args.steps} step(s), {hp}")

    A, MA = run_ref(W0, grads_seq, hp)
    B, MB = run_torch(W0, grads_seq, hp)
    C, MC = run_torch(W0, grads_seq, hp, fp32_ns=True)
    D, _ = run_ref(W0, grads_seq, hp, ns_dtype=torch.bfloat16)
    stored = "outputs/step0_params" if args.steps == 1 else "outputs/params"
    rows = []
    for k in names:
        golden = torch.from_numpy(data[f"{stored}/{k}"].copy())
        uA = A[k] - W0[k]
        r = dict(name=k, shape=tuple(W0[k].shape), vs_golden=rel_max(A[k], golden))
        for tag, X in (("B", B), ("C", C), ("D", D)):
            r[f"{tag}_w"] = rel_max(X[k], A[k])
            r[f"{tag}_u"] = rel_max(X[k] - W0[k], uA)
            r[f"{tag}_uf"] = rel_fro(X[k] - W0[k], uA)
        r["BD_u"] = rel_max(B[k] - W0[k], D[k] - W0[k])
        ratio = MB[k].double() / MA[k].double()
        r["buf_ratio"] = (ratio.min().item(), ratio.max().item())
        r["bufC_ratio"] = rel_max(MC[k], MB[k])
        rows.append(r)
    print("\nmax|x - A| / max|A| (A = muon.py fp32); u = the update W_new - W_old, uF = "
          "||du||_F / ||u_A||_F")
    print(f"{'matrix':54s} {'A vs h5':>8s} | {'B: torch.optim.Muon (bf16 NS)':^30s} | "
          f"{'C: torch, fp32 NS':^22s} | {'D: Moonlight bf16 NS':^30s} | B vs D u")
    print(f"{'':54s} {'':8s} | {'w':>8s} {'u':>9s} {'uF':>9s} | {'w':>10s} {'u':>10s} | "
          f"{'w':>8s} {'u':>9s} {'uF':>9s} |")
    for r in rows:
        print(f"{r['name'] + ' ' + str(list(r['shape'])):54s} {r['vs_golden']:8.1e} | "
              f"{r['B_w']:8.1e} {r['B_u']:9.2e} {r['B_uf']:9.2e} | {r['C_w']:10.1e} "
              f"{r['C_u']:10.1e} | {r['D_w']:8.1e} {r['D_u']:9.2e} {r['D_uf']:9.2e} | "
              f"{r['BD_u']:8.2e}")
    print("\ntorch's momentum_buffer / muon.py's M (expected 1 - mu = "
          f"{1 - hp['mu']:.6g}): "
          + ", ".join(f"[{r['buf_ratio'][0]:.6f}, {r['buf_ratio'][1]:.6f}]" for r in rows))
    worst_c = max(max(r["C_w"], r["C_u"]) for r in rows)
    worst_g = max(r["vs_golden"] for r in rows)
    print(f"worst: A vs the golden {worst_g:.1e}; torch with fp32 NS vs A {worst_c:.1e} "
          f"(weights and update)")
    assert worst_g < 1e-5 and worst_c < 1e-4, (worst_g, worst_c)


if __name__ == "__main__":
    main()
