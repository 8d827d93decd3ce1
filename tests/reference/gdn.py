"""Independent PyTorch reference of the Gated DeltaNet mixer (Qwen3-Next / Qwen3.5 linear
attention) for the C++ layer goldens (gen_gdn_goldens.py).

Written from the moetron layout spec (parameters and math below), the Gated DeltaNet paper
(Yang, Kautz, Hatamizadeh, arXiv 2412.06464) and the algorithm of Hugging Face transformers'
`torch_chunk_gated_delta_rule` (models/qwen3_next), not from the C++ code. The reference path is
a naive per-token recurrence; `chunk_gated_delta_rule` (the chunked WY form, chunk 64 with zero
padding) exists only to check it. fp32 unless the inputs are fp64; plain tensors and autograd.

Parameters (local names, in registration order = the fused input GEMM's row order):

  in_proj_q.weight [Hk*dk, d]   in_proj_k.weight [Hk*dk, d]   in_proj_v.weight [Hv*dv, d]
  in_proj_z.weight [Hv*dv, d]   in_proj_b.weight [Hv, d]      in_proj_a.weight [Hv, d]
  conv1d_q.weight [Hk*dk, K]    conv1d_k.weight [Hk*dk, K]    conv1d_v.weight [Hv*dv, K]
  A_log [Hv]   dt_bias [Hv]   norm.weight [dv]   out_proj.weight [d, Hv*dv]

(Hugging Face qwen3_5: in_proj_qkv = rows [in_proj_q; in_proj_k; in_proj_v], conv1d.weight
[conv_dim, 1, K] = the three conv weights concatenated and unsqueezed at dim 1.)

Forward, x [B, T, d]:

  qkv = x [Wq; Wk; Wv]^T, z = x Wz^T, b = x Wb^T, a = x Wa^T
  c[t, ch] = sum_{j<K} w[ch, j] qkv[t - (K-1) + j, ch]   (zero before t = 0, per sequence)
  q, k, v = split(silu(c)) viewed [B,T,Hk,dk], [B,T,Hk,dk], [B,T,Hv,dv]
  q = q rsqrt(|q|^2 + 1e-6) dk^-0.5,  k = k rsqrt(|k|^2 + 1e-6)     (per head vector)
  beta = sigmoid(b),  g = -exp(A_log) softplus(a + dt_bias),  alpha = exp(g)
  per value head h (key head h // (Hv/Hk)), S [dk, dv] = 0 before t = 0:
      S <- alpha_t S;  u = beta_t (v_t - S^T k_t);  S <- S + k_t u^T;  o_t = S^T q_t
  n = rms_norm(o over dv, eps) * norm.weight * silu(z)      (z viewed [B, T, Hv, dv])
  y = n [B, T, Hv*dv] out_proj^T

Layout conventions as model.py: activations [B, T, d], per-head [B, T, heads, hd], weights
[out, in] with y = x W^T, no biases.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402

L2_EPS = 1e-6  # the q/k L2 norm's eps: fixed, not rms_norm_eps


@dataclass
class GdnConfig:
    hidden_size: int = 32
    linear_num_key_heads: int = 2
    linear_key_head_dim: int = 16
    linear_num_value_heads: int = 4
    linear_value_head_dim: int = 24
    linear_conv_kernel_dim: int = 4
    rms_norm_eps: float = 1e-6

    @property
    def key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    @property
    def q_scale(self) -> float:
        return self.linear_key_head_dim ** -0.5


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def param_shapes(cfg: GdnConfig) -> dict:
    """Local name -> shape, in registration order (the order the goldens draw them)."""
    d, K = cfg.hidden_size, cfg.linear_conv_kernel_dim
    Hv, dv = cfg.linear_num_value_heads, cfg.linear_value_head_dim
    return {
        "in_proj_q.weight": (cfg.key_dim, d),
        "in_proj_k.weight": (cfg.key_dim, d),
        "in_proj_v.weight": (cfg.value_dim, d),
        "in_proj_z.weight": (cfg.value_dim, d),
        "in_proj_b.weight": (Hv, d),
        "in_proj_a.weight": (Hv, d),
        "conv1d_q.weight": (cfg.key_dim, K),
        "conv1d_k.weight": (cfg.key_dim, K),
        "conv1d_v.weight": (cfg.value_dim, K),
        "A_log": (Hv,),
        "dt_bias": (Hv,),
        "norm.weight": (dv,),
        "out_proj.weight": (d, cfg.value_dim),
    }


def init_params(cfg: GdnConfig, g: torch.Generator, std: float = 0.3) -> dict:
    """Test initialisation (not a training one), drawn in param_shapes order, chosen so that with
    x ~ N(0, 1) the activations are O(1) and no gate saturates:

      in_proj_{q,k,v,z}, out_proj   N(0, std)
      in_proj_b                     N(0, 0.5 / sqrt(d))   -> b ~ N(0, 0.5), beta mostly in (0.2, 0.8)
      in_proj_a                     N(0, 0.5 / sqrt(d))   -> a ~ N(0, 0.5)
      conv1d_*                      N(0, 0.5)
      A_log                         log U(1, 4)
      dt_bias                       softplus^-1(dt), dt = exp U(log 0.01, log 0.15) (Mamba-style)
      norm.weight                   1 + N(0, 0.2)

    so alpha = exp(-exp(A_log) softplus(a + dt_bias)) has its 1st-99th percentiles at about
    (0.5, 0.99) (extremes ~0.4 and 0.995) and beta at (0.22, 0.78) in the goldens.
    """
    d = cfg.hidden_size
    p = {}
    for n, s in param_shapes(cfg).items():
        if n == "in_proj_b.weight":
            p[n] = (0.5 / math.sqrt(d)) * torch.randn(*s, generator=g)
        elif n == "in_proj_a.weight":
            p[n] = (0.5 / math.sqrt(d)) * torch.randn(*s, generator=g)
        elif n.startswith("conv1d_"):
            p[n] = 0.5 * torch.randn(*s, generator=g)
        elif n == "A_log":
            p[n] = torch.log(1.0 + 3.0 * torch.rand(*s, generator=g))
        elif n == "dt_bias":
            dt = torch.exp(math.log(0.01) + (math.log(0.15) - math.log(0.01))
                           * torch.rand(*s, generator=g))
            p[n] = dt + torch.log(-torch.expm1(-dt))  # log(exp(dt) - 1), the inverse softplus
        elif n == "norm.weight":
            p[n] = 1.0 + 0.2 * torch.randn(*s, generator=g)
        else:
            p[n] = std * torch.randn(*s, generator=g)
    return p


# --------------------------------------------------------------------------------------------
# The delta rule
# --------------------------------------------------------------------------------------------


def _expand_heads(t, Hv):
    """[B, T, Hk, dk] -> [B, T, Hv, dk]: value head h reads key head h // (Hv / Hk)."""
    r = Hv // t.shape[2]
    return t if r == 1 else t.repeat_interleave(r, dim=2)


def recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=None, dtype=None):
    """The naive per-token gated delta rule.

    q, k [B, T, Hk, dk] (already normalised and scaled), v [B, T, Hv, dv], g (log decay) and
    beta [B, T, Hv]; initial_state [B, Hv, dk, dv] or None (zeros). Computes in `dtype` (default:
    v's dtype); returns o [B, T, Hv, dv] and the final state S [B, Hv, dk, dv] in that dtype.
        S <- exp(g_t) S;  u = beta_t (v_t - S^T k_t);  S <- S + k_t u^T;  o_t = S^T q_t
    """
    dtype = dtype or v.dtype
    B, T, Hv, dv = v.shape
    q, k = _expand_heads(q, Hv).to(dtype), _expand_heads(k, Hv).to(dtype)
    v, g, beta = v.to(dtype), g.to(dtype), beta.to(dtype)
    dk = q.shape[-1]
    S = (torch.zeros(B, Hv, dk, dv, dtype=dtype) if initial_state is None
         else initial_state.to(dtype))
    outs = []
    for t in range(T):
        S = S * torch.exp(g[:, t])[..., None, None]
        kt = k[:, t]                                               # [B, Hv, dk]
        pred = torch.einsum("bhkv,bhk->bhv", S, kt)                # S^T k
        u = beta[:, t, :, None] * (v[:, t] - pred)                 # [B, Hv, dv]
        S = S + kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]))     # S^T q
    return torch.stack(outs, dim=1), S


def chunk_gated_delta_rule(q, k, v, g, beta, initial_state=None, chunk_size=64):
    """The chunked (WY) form of the same recurrence, as Hugging Face's torch_chunk_gated_delta_rule
    organises it: zero padding to a multiple of chunk_size (padded steps have k = v = beta = 0
    and g = 0, so they change nothing), per chunk the within-chunk cumulative log decay G, the
    unit lower triangular system (I + L) with L_ij = beta_i exp(G_i - G_j) k_i . k_j (j < i),
    solved here with solve_triangular instead of HF's row-by-row substitution, then
        U = (I + L)^-1 (beta V) - (I + L)^-1 (beta exp(G) K) S0
        O = exp(G) Q S0 + tril(exp(G_i - G_j) Q K^T) U
        S = exp(G_last) S0 + sum_j exp(G_last - G_j) k_j u_j^T.
    Same arguments and results as recurrent_gated_delta_rule; computes in v's dtype."""
    B, T, Hv, dv = v.shape
    dt = v.dtype
    q, k = _expand_heads(q, Hv).to(dt), _expand_heads(k, Hv).to(dt)
    dk = q.shape[-1]
    C = chunk_size
    pad = (-T) % C
    # [B, Hv, N, C, *]
    def chunks(t):
        t = t.transpose(1, 2)                                      # [B, Hv, T, ...]
        if t.dim() == 3:
            t = F.pad(t, (0, pad))
        else:
            t = F.pad(t, (0, 0, 0, pad))
        return t.reshape(B, Hv, -1, C, *t.shape[3:])
    qc, kc, vc, gc, bc = chunks(q), chunks(k), chunks(v), chunks(g.to(dt)), chunks(beta.to(dt))
    N = qc.shape[2]
    G = gc.cumsum(-1)                                              # [B, Hv, N, C]
    diff = G[..., :, None] - G[..., None, :]                       # G_i - G_j
    lower = torch.ones(C, C, dtype=torch.bool).tril()              # j <= i
    strict = torch.ones(C, C, dtype=torch.bool).tril(-1)           # j < i
    decay = torch.where(lower, diff, torch.full_like(diff, -math.inf)).exp()
    kb, vb = kc * bc[..., None], vc * bc[..., None]
    L = (kb @ kc.transpose(-1, -2)) * decay * strict
    A = L + torch.eye(C, dtype=dt)
    w_v = torch.linalg.solve_triangular(A, vb, upper=False, unitriangular=True)
    w_k = torch.linalg.solve_triangular(A, kb * G.exp()[..., None], upper=False, unitriangular=True)
    S = (torch.zeros(B, Hv, dk, dv, dtype=dt) if initial_state is None
         else initial_state.to(dt))
    outs = []
    for n in range(N):
        Gn = G[:, :, n]
        U = w_v[:, :, n] - w_k[:, :, n] @ S                        # [B, Hv, C, dv]
        intra = (qc[:, :, n] @ kc[:, :, n].transpose(-1, -2)) * decay[:, :, n]
        outs.append((qc[:, :, n] * Gn.exp()[..., None]) @ S + intra @ U)
        last = Gn[..., -1:]
        S = S * last.exp()[..., None] + (kc[:, :, n] * (last - Gn).exp()[..., None]).transpose(-1, -2) @ U
    o = torch.cat(outs, dim=2)[:, :, :T].transpose(1, 2)           # [B, T, Hv, dv]
    return o, S


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


def causal_conv(x, w):
    """Depthwise causal conv: x [B, T, C], w [C, K] -> c[t] = sum_j w[:, j] x[t - (K-1) + j]."""
    T, K = x.shape[1], w.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))                                # K-1 zeros before t = 0
    return sum(w[:, j] * xp[:, j:j + T] for j in range(K))


def l2_normalize(x):
    return x * torch.rsqrt(x.pow(2).sum(dim=-1, keepdim=True) + L2_EPS)


def gdn_parts(x: torch.Tensor, p: dict, prefix: str, cfg: GdnConfig, core_fn=None) -> dict:
    """The mixer with its intermediates: dict of q_normed, k_normed [B,T,Hk,dk] (q includes
    dk^-0.5), v [B,T,Hv,dv], g, beta [B,T,Hv], core [B,T,Hv,dv] (the delta rule's output),
    final_state [B,Hv,dk,dv], y [B,T,d]. core_fn (default recurrent_gated_delta_rule) is
    swappable for the chunked check."""
    B, T, d = x.shape
    Hk, dk = cfg.linear_num_key_heads, cfg.linear_key_head_dim
    Hv, dv = cfg.linear_num_value_heads, cfg.linear_value_head_dim
    W = lambda n: p[prefix + n]  # noqa: E731
    w_in = torch.cat([W("in_proj_q.weight"), W("in_proj_k.weight"), W("in_proj_v.weight")], 0)
    w_conv = torch.cat([W("conv1d_q.weight"), W("conv1d_k.weight"), W("conv1d_v.weight")], 0)
    qkv = x @ w_in.t()                                             # [B, T, conv_dim]
    z = x @ W("in_proj_z.weight").t()
    b = x @ W("in_proj_b.weight").t()
    a = x @ W("in_proj_a.weight").t()
    m = F.silu(causal_conv(qkv, w_conv))
    q = m[..., : cfg.key_dim].reshape(B, T, Hk, dk)
    k = m[..., cfg.key_dim: 2 * cfg.key_dim].reshape(B, T, Hk, dk)
    v = m[..., 2 * cfg.key_dim:].reshape(B, T, Hv, dv)
    q = l2_normalize(q) * cfg.q_scale
    k = l2_normalize(k)
    beta = torch.sigmoid(b)
    g = -torch.exp(W("A_log")) * F.softplus(a + W("dt_bias"))
    core, S = (core_fn or recurrent_gated_delta_rule)(q, k, v, g, beta)
    n = ref.rms_norm(core, W("norm.weight"), cfg.rms_norm_eps) * F.silu(z.reshape(B, T, Hv, dv))
    y = n.reshape(B, T, Hv * dv) @ W("out_proj.weight").t()
    return dict(q_normed=q, k_normed=k, v=v, g=g, beta=beta, core=core, final_state=S, y=y)


def gdn(x: torch.Tensor, p: dict, prefix: str, cfg: GdnConfig, core_fn=None):
    """The mixer x [B, T, d] -> (y [B, T, d], final state [B, Hv, dk, dv])."""
    r = gdn_parts(x, p, prefix, cfg, core_fn)
    return r["y"], r["final_state"]


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-30)).item()


def _random_core_inputs(g, B, T, Hk, dk, Hv, dv, dtype=torch.float64):
    q = l2_normalize(torch.randn(B, T, Hk, dk, generator=g, dtype=dtype)) * dk ** -0.5
    k = l2_normalize(torch.randn(B, T, Hk, dk, generator=g, dtype=dtype))
    v = torch.randn(B, T, Hv, dv, generator=g, dtype=dtype)
    gl = -0.4 * torch.rand(B, T, Hv, generator=g, dtype=dtype)            # alpha in (0.67, 1)
    beta = torch.rand(B, T, Hv, generator=g, dtype=dtype)
    return q, k, v, gl, beta


def gate_stats(x, p, cfg: GdnConfig) -> str:
    r = gdn_parts(x, p, "", cfg)
    alpha, beta = r["g"].exp(), r["beta"]
    return (f"alpha [{alpha.min().item():.3f}, {alpha.max().item():.3f}] "
            f"beta [{beta.min().item():.3f}, {beta.max().item():.3f}] "
            f"|core|max {r['core'].abs().max().item():.3f} |y| std {r['y'].std().item():.3f}")


def self_check(cases=None):
    """(a) the recurrence against the chunked form in fp64 (outputs and final states), on random
    core inputs (partial last chunk, exact chunks, one short chunk, an initial state, a split
    sequence continued from its state) and on the full mixer of each case; (b) fp32 against
    fp64 outputs and gradients of the mixer; (c) the explicit causal conv against
    F.conv1d(groups=C, padding=K-1)[..., :T] (the Hugging Face form)."""
    g = torch.Generator().manual_seed(29)
    if cases is None:
        cases = {"small": (2, 100, GdnConfig()),
                 "mha": (1, 70, GdnConfig(24, 2, 8, 2, 8, 3))}
    # (a) core: recurrent vs chunked, fp64.
    worst_o = worst_s = 0.0
    for (B, T, Hk, dk, Hv, dv, C, init) in [(2, 100, 2, 16, 4, 24, 64, False),
                                            (1, 128, 1, 8, 3, 5, 64, False),
                                            (2, 37, 2, 8, 2, 8, 64, True),
                                            (1, 150, 2, 16, 4, 8, 16, True)]:
        q, k, v, gl, beta = _random_core_inputs(g, B, T, Hk, dk, Hv, dv)
        S0 = torch.randn(B, Hv, dk, dv, generator=g, dtype=torch.float64) if init else None
        o_r, s_r = recurrent_gated_delta_rule(q, k, v, gl, beta, S0)
        o_c, s_c = chunk_gated_delta_rule(q, k, v, gl, beta, S0, chunk_size=C)
        eo, es = _rel(o_c, o_r), _rel(s_c, s_r)
        assert eo < 1e-10 and es < 1e-10, (T, eo, es)
        worst_o, worst_s = max(worst_o, eo), max(worst_s, es)
    # A sequence split at t = 60 and continued from the first part's final state.
    q, k, v, gl, beta = _random_core_inputs(g, 2, 100, 2, 16, 4, 24)
    o_full, s_full = recurrent_gated_delta_rule(q, k, v, gl, beta)
    o1, s1 = recurrent_gated_delta_rule(q[:, :60], k[:, :60], v[:, :60], gl[:, :60], beta[:, :60])
    o2, s2 = chunk_gated_delta_rule(q[:, 60:], k[:, 60:], v[:, 60:], gl[:, 60:], beta[:, 60:], s1)
    e_split = max(_rel(torch.cat([o1, o2], 1), o_full), _rel(s2, s_full))
    assert e_split < 1e-10, e_split
    print(f"  delta rule, recurrent vs chunked (chunk 64 / 16, zero padding) in fp64: outputs "
          f"{worst_o:.1e}, final states {worst_s:.1e}; split at t=60 and continued from the "
          f"state: {e_split:.1e}")

    worst_grad = worst_layer = worst_conv = 0.0
    for name, (B, T, cfg) in cases.items():
        p = init_params(cfg, g)
        x = torch.randn(B, T, cfg.hidden_size, generator=g)
        p64 = {kk: vv.double() for kk, vv in p.items()}
        # (a) the full mixer with the chunked core, fp64.
        r_rec = gdn_parts(x.double(), p64, "", cfg)
        r_chk = gdn_parts(x.double(), p64, "", cfg, core_fn=chunk_gated_delta_rule)
        el = max(_rel(r_chk["y"], r_rec["y"]), _rel(r_chk["final_state"], r_rec["final_state"]),
                 _rel(r_chk["core"], r_rec["core"]))
        assert el < 1e-10, (name, el)
        worst_layer = max(worst_layer, el)
        # (c) the conv against F.conv1d.
        w_in = torch.cat([p64["in_proj_q.weight"], p64["in_proj_k.weight"],
                          p64["in_proj_v.weight"]], 0)
        w_conv = torch.cat([p64["conv1d_q.weight"], p64["conv1d_k.weight"],
                            p64["conv1d_v.weight"]], 0)
        qkv = x.double() @ w_in.t()
        Kc = cfg.linear_conv_kernel_dim
        hf = F.conv1d(qkv.transpose(1, 2), w_conv[:, None, :], groups=cfg.conv_dim,
                      padding=Kc - 1)[..., :T].transpose(1, 2)
        ec = _rel(causal_conv(qkv, w_conv), hf)
        assert ec < 1e-14, ec
        worst_conv = max(worst_conv, ec)
        # (b) fp32 vs fp64 outputs and gradients of sum(y * dy).
        dy = torch.randn(B, T, cfg.hidden_size, generator=g)
        res = {}
        for dt in (torch.float32, torch.float64):
            xi = x.to(dt).clone().requires_grad_(True)
            pi = {kk: vv.to(dt).clone().requires_grad_(True) for kk, vv in p.items()}
            yi, si = gdn(xi, pi, "", cfg)
            (yi * dy.to(dt)).sum().backward()
            res[dt] = (yi, si, xi.grad, {kk: vv.grad for kk, vv in pi.items()})
        (y32, s32, gx32, gp32), (y64, s64, gx64, gp64) = res[torch.float32], res[torch.float64]
        w = max([_rel(y32, y64), _rel(s32, s64), _rel(gx32, gx64)]
                + [_rel(gp32[kk], gp64[kk]) for kk in gp32])
        assert w < 1e-5, (name, w)
        worst_grad = max(worst_grad, w)
        print(f"  {name}: mixer with chunked core vs recurrent (fp64) {el:.1e}; fp32 vs fp64 "
              f"y/state/grads worst {w:.1e}; {gate_stats(x, p, cfg)}")
    print(f"  explicit causal conv vs F.conv1d(padding=K-1)[:T]: {worst_conv:.1e}")
    print("  GDN self-checks passed")


if __name__ == "__main__":
    torch.set_num_threads(1)
    self_check()
