"""Independent PyTorch reference of the Muon optimizer step as Moonlight defines it, for the C++
goldens (gen_muon_goldens.py).

Written from Moonlight's `examples/toy_train.py` (github.com/MoonshotAI/Moonlight, commit
c2ad5b20c605086526a179d36901bfc41b52b44b: `zeropower_via_newtonschulz5` lines 49-76,
`adjust_lr_for_muon` lines 142-148, the Muon part of `step` lines 180-203) and the paper
(arXiv 2502.16982), not from the C++ code. Per matrix parameter W [m, n] with gradient G and
momentum buffer M (zero before the first step), each matrix separately (every expert's too):

  M <- mu M + G                                   (buf.mul_(momentum).add_(g))
  U  = G + mu M  if nesterov  else  M             (g.add(buf, alpha=momentum))
  O  = NS_k(U)                                    (k = ns_steps)
  W <- W (1 - lr wd) - lr rms_scale sqrt(max(m, n)) O   (decay with the unadjusted lr, first)

  NS_k(U): X = U^T if m > n else U;  X = X / (||X||_F + 1e-7);
           k times: A = X X^T;  B = b A + c A A;  X = a X + B X;
           transposed back;  (a, b, c) = (3.4445, -4.7750, 2.0315).

Moonlight runs NS in bfloat16 (`X = G.bfloat16()`); this reference (like moetron) runs it in
the dtype of the tensors it is given: float32 for the goldens, float64 for the self-checks.
The scalars (mu, 1 - lr wd, lr rms_scale sqrt(max(m, n))) are Python doubles; torch rounds
each once to the tensor's dtype when it applies it.
"""

from __future__ import annotations

import math

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz(U: torch.Tensor, steps: int, coeffs=NS_COEFFS, eps: float = NS_EPS,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Quintic Newton-Schulz orthogonalization of U [..., m, n], each trailing matrix on its own
    (a stacked [E, m, n] is E separate matrices, each with its own Frobenius norm). Computes and
    returns in `dtype` (default U's); U is not modified."""
    a, b, c = coeffs
    X = U.to(dtype if dtype is not None else U.dtype).clone()
    tall = U.size(-2) > U.size(-1)
    if tall:
        X = X.transpose(-2, -1)
    norm = torch.linalg.matrix_norm(X, ord="fro", keepdim=True)  # per matrix
    X = X / (norm + eps)
    for _ in range(steps):
        A = X @ X.transpose(-2, -1)
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.transpose(-2, -1)
    return X.contiguous()


def update_scale(lr: float, rms_scale: float, shape) -> float:
    """Moonlight's adjusted lr: lr * rms_scale * sqrt(max(m, n)) (rms_scale = 0.2 there)."""
    m, n = shape[-2], shape[-1]
    return lr * rms_scale * math.sqrt(max(m, n))


def muon_step(params: dict, grads: dict, momenta: dict, lr: float, mu: float, nesterov: bool,
              ns_steps: int, wd: float, rms_scale: float, ns_dtype: torch.dtype | None = None,
              record: dict | None = None) -> None:
    """One Muon step of every matrix in params, in place on params[k] and momenta[k] (same dtype
    as the parameter; the goldens use float32). momenta[k] must exist (zeros before the first
    step). ns_dtype: the dtype NS runs in (default the parameter's; bfloat16 = Moonlight's).
    record: when given, record[k] = (U, O) of this step."""
    for k, W in params.items():
        G, M = grads[k], momenta[k]
        assert W.dim() == 2 and G.shape == W.shape == M.shape, k
        assert G.dtype == W.dtype == M.dtype, k
        M.mul_(mu).add_(G)
        U = G.add(M, alpha=mu) if nesterov else M.clone()
        O = newton_schulz(U, ns_steps, dtype=ns_dtype)
        if record is not None:
            record[k] = (U.clone(), O.clone())
        W.mul_(1.0 - lr * wd)
        W.add_(O.to(W.dtype), alpha=-update_scale(lr, rms_scale, W.shape))


def muon_step_fp64(params: dict, grads: dict, momenta: dict, **hp) -> tuple[dict, dict]:
    """muon_step on float64 copies; returns (params, momenta) in float64, inputs untouched."""
    p = {k: v.detach().double().clone() for k, v in params.items()}
    m = {k: v.detach().double().clone() for k, v in momenta.items()}
    g = {k: v.detach().double() for k, v in grads.items()}
    muon_step(p, g, m, **hp)
    return p, m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (in float64)."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def self_check(shapes=None) -> dict:
    """(a) NS of a stacked [E, m, n] tensor equals per-slice NS, (b) a two-step fp32 step
    agrees with the fp64 one (weights, updates, momenta), (c) the singular values of NS(U) lie
    in roughly [0.5, 1.5]. Returns the figures."""
    g = torch.Generator().manual_seed(6901)
    if shapes is None:
        shapes = {"tall": (48, 32), "wide": (32, 48), "square": (24, 24), "expert": (32, 16)}
    out = {}
    # (a) stacked vs per slice, tall and wide, fp32 and fp64.
    worst_a = {torch.float32: 0.0, torch.float64: 0.0}
    for (m, n) in [(32, 16), (16, 32), (24, 24)]:
        Us = torch.randn(4, m, n, generator=g) * torch.tensor([0.01, 0.1, 1.0, 10.0]).view(4, 1, 1)
        for dt in (torch.float32, torch.float64):
            stacked = newton_schulz(Us.to(dt), 5)
            for e in range(Us.size(0)):
                one = newton_schulz(Us[e].to(dt), 5)
                worst_a[dt] = max(worst_a[dt], _rel(stacked[e], one))
    assert worst_a[torch.float32] < 1e-5 and worst_a[torch.float64] < 1e-13, worst_a
    out["stacked_vs_slice_fp32"] = worst_a[torch.float32]
    out["stacked_vs_slice_fp64"] = worst_a[torch.float64]
    print(f"  (a) stacked [E, m, n] NS vs per-slice NS: worst {worst_a[torch.float32]:.2e} (fp32), "
          f"{worst_a[torch.float64]:.2e} (fp64) relative to the largest entry")

    # (b) fp32 vs fp64, two steps, both Nesterov settings.
    for nesterov, ns_steps in ((True, 5), (False, 3)):
        hp = dict(lr=0.02, mu=0.95, nesterov=nesterov, ns_steps=ns_steps, wd=0.1, rms_scale=0.2)
        W0 = {k: 0.1 * torch.randn(*s, generator=g) for k, s in shapes.items()}
        Gs = [{k: 0.05 * torch.randn(*s, generator=g) for k, s in shapes.items()} for _ in range(2)]
        p32 = {k: v.clone() for k, v in W0.items()}
        m32 = {k: torch.zeros_like(v) for k, v in W0.items()}
        p64 = {k: v.double() for k, v in W0.items()}
        m64 = {k: torch.zeros_like(v) for k, v in p64.items()}
        ew = eu = em = 0.0
        for G in Gs:
            before = {k: v.clone() for k, v in p32.items()}
            muon_step(p32, G, m32, **hp)
            # fp64 from the same fp32 state, so the comparison sees one step's rounding.
            q64, n64 = muon_step_fp64(before, G, {k: v.double() for k, v in m64.items()}, **hp)
            for k in W0:
                ew = max(ew, _rel(p32[k], q64[k]))
                eu = max(eu, _rel(p32[k] - before[k], q64[k] - before[k].double()))
                em = max(em, _rel(m32[k], n64[k]))
            # and the fp64 trajectory carried along on its own
            p64, m64 = muon_step_fp64(p64, G, m64, **hp)
        traj = max(_rel(p32[k], p64[k]) for k in W0)
        tag = f"nesterov={int(nesterov)} ns_steps={ns_steps}"
        assert ew < 1e-6 and eu < 1e-5 and traj < 1e-6, (tag, ew, eu, traj)
        out[f"fp32_vs_fp64 {tag}"] = dict(weights=ew, update=eu, momentum=em, trajectory=traj)
        print(f"  (b) fp32 vs fp64 ({tag}, 2 steps): weights {ew:.2e}, update W_new - W_old "
              f"{eu:.2e}, momentum {em:.2e}; own fp64 trajectory after 2 steps {traj:.2e} "
              f"(each relative to the largest entry)")

    # (c) singular values of NS(U), U Gaussian (shapes x scales x 4 draws). Rectangular U
    # (aspect ratio away from 1) have smallest singular value ~(1 - sqrt(n/m)) sqrt(m) / ||U||_F,
    # which 5 (or 3) steps lift into the band; a square Gaussian U has singular values near 0
    # (Marchenko-Pastur reaches 0 at aspect 1), which k steps multiply by only ~a^k (3.4445^5 =
    # 484), so a few of them stay below 0.5.
    for ns_steps in (5, 3):
        band = {}
        for (m, n) in sorted(set(shapes.values()) | {(64, 64), (128, 32), (8, 96)}):
            lo, hi, inside, total = math.inf, 0.0, 0, 0
            for scale in (1e-3, 1.0, 1e3):
                for _ in range(4):
                    U = scale * torch.randn(m, n, generator=g)
                    s = torch.linalg.svdvals(newton_schulz(U, ns_steps).double())
                    lo, hi = min(lo, s.min().item()), max(hi, s.max().item())
                    inside += int(((s >= 0.5) & (s <= 1.5)).sum())
                    total += s.numel()
            band[(m, n)] = (lo, hi, inside / total)
        rect = [v for (m, n), v in band.items() if m != n]
        sq = [v for (m, n), v in band.items() if m == n]
        rlo, rhi = min(v[0] for v in rect), max(v[1] for v in rect)
        slo, shi = min(v[0] for v in sq), max(v[1] for v in sq)
        sfrac = min(v[2] for v in sq)
        out[f"singular_values ns_steps={ns_steps}"] = dict(rect=(rlo, rhi), square=(slo, shi),
                                                            square_in_band=sfrac)
        print(f"  (c) singular values of NS_{ns_steps}(U), Gaussian U: rectangular "
              f"[{rlo:.4f}, {rhi:.4f}]; square [{slo:.4f}, {shi:.4f}], "
              f"{100 * sfrac:.1f}% of them in [0.5, 1.5]")
        assert 0.5 <= rlo and rhi <= 1.5 and shi <= 1.5, band
        assert sfrac >= (0.95 if ns_steps == 5 else 0.85), band
    # An orthogonal U (||U||_F = sqrt(24): X starts with every sigma at 0.204).
    Q, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))
    s = torch.linalg.svdvals(newton_schulz(Q, 5))
    out["orthogonal_U_ns5"] = (s.min().item(), s.max().item())
    print(f"  (c) orthogonal U: NS_5 sigma in [{s.min().item():.4f}, {s.max().item():.4f}]")
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    self_check()
    print("  muon self-checks passed")
