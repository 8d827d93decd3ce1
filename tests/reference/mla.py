"""Independent PyTorch reference of DeepSeek-V2/V3 multi-head latent attention (MLA) with
optional YaRN RoPE scaling, for the C++ layer goldens (gen_mla_goldens.py).

Written from the papers (DeepSeek-V2 arXiv 2405.04434 section 2.1, YaRN arXiv 2309.00071) and
the Hugging Face rules quoted below, not from the C++ code. fp32 unless the inputs are fp64;
plain tensors and autograd; parameters in a dict keyed by the Hugging Face names of
DeepseekV3Attention (prefix + "q_a_proj.weight", ...). RMSNorm and the RoPE rotation are those
of model.py.

YaRN, as transformers' `modeling_rope_utils._compute_yarn_parameters` (5.24.0) computes it, with
`factor` taken as given (transformers >= 4.56 no longer derives it from max_position_embeddings
/ original_max_position_embeddings; 4.51-4.55 did, which agrees when the config is consistent):

  get_mscale(s, m) = 1 if s <= 1 else 0.1 m ln(s) + 1
  attention_factor = get_mscale(f, mscale) / get_mscale(f, mscale_all_dim) if mscale and
                     mscale_all_dim (both non-zero) else get_mscale(f)
  corr(r)          = dim ln(L / (2 pi r)) / (2 ln theta)     (L = original_max_position_embeddings)
  low, high        = max(floor(corr(beta_fast)), 0), min(ceil(corr(beta_slow)), dim - 1)
  ramp_j           = clamp((j - low) / (high - low), 0, 1), j = 0..dim/2-1 (high += 0.001 if equal)
  e_j              = 1 - ramp_j                              (extrapolation weight)
  inv_freq_j       = theta^(-2j/dim) / f * (1 - e_j) + theta^(-2j/dim) * e_j
  cos, sin         = attention_factor * cos / sin (pos * inv_freq)

and DeepseekV3Attention's softmax scale (qk_nope + qk_rope)^-0.5 * m^2, m = get_mscale(f,
mscale_all_dim) (1 when mscale_all_dim is 0 or there is no scaling).

Layout conventions as model.py: activations [B, T, d], per-head [B, T, heads, hd], weights
[out, in] with y = x W^T, no biases, positions 0..T-1.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402

ROTATE_HALF = ref.ROTATE_HALF
INTERLEAVED = ref.INTERLEAVED


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class YarnConfig:
    factor: float = 1.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0


@dataclass
class MlaConfig:
    hidden_size: int = 32
    heads: int = 4
    q_lora_rank: int = 24  # 0: q_proj directly
    kv_lora_rank: int = 16
    qk_nope_head_dim: int = 8
    qk_rope_head_dim: int = 4
    v_head_dim: int = 12
    rope_theta: float = 10000.0
    rope_style: str = INTERLEAVED
    rms_norm_eps: float = 1e-6
    yarn: YarnConfig | None = None

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


# --------------------------------------------------------------------------------------------
# YaRN and the RoPE tables
# --------------------------------------------------------------------------------------------


def get_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq_and_factor(rope_dim: int, theta: float, factor: float, original_max_pos: int,
                             beta_fast: float, beta_slow: float, mscale: float,
                             mscale_all_dim: float):
    """(inv_freq float64 [rope_dim/2], attention_factor) as transformers'
    _compute_yarn_parameters (truncate=True, no explicit attention_factor), in float64."""
    dim = rope_dim
    if mscale and mscale_all_dim:
        attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
    else:
        attention_factor = get_mscale(factor)

    def correction_dim(num_rotations):
        return (dim * math.log(original_max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # as HF: prevents the division by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrap_factor = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    inv_extrap = 1.0 / pos_freqs
    inv_interp = 1.0 / (factor * pos_freqs)
    inv_freq = inv_interp * (1 - extrap_factor) + inv_extrap * extrap_factor
    return inv_freq, attention_factor


def yarn_of(yarn: YarnConfig | None):
    """The YarnConfig when it scales (factor != 1), else None."""
    if yarn is None or yarn.factor == 1.0:
        return None
    return yarn


def rope_tables(T: int, rope_dim: int, theta: float, yarn: YarnConfig | None = None):
    """cos, sin float32 [T, rope_dim/2]: angle pos * inv_freq_j in float64 (inv_freq of YaRN when
    given), times attention_factor, rounded once to float32. Without YaRN these are exactly
    model.rope_cos_sin."""
    yarn = yarn_of(yarn)
    if yarn is None:
        j = torch.arange(rope_dim // 2, dtype=torch.float64)
        inv_freq, af = theta ** (-2.0 * j / rope_dim), 1.0
    else:
        inv_freq, af = yarn_inv_freq_and_factor(rope_dim, theta, yarn.factor,
                                                yarn.original_max_position_embeddings,
                                                yarn.beta_fast, yarn.beta_slow, yarn.mscale,
                                                yarn.mscale_all_dim)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return (torch.cos(angle) * af).float(), (torch.sin(angle) * af).float()


def attention_factor(cfg: MlaConfig) -> float:
    yarn = yarn_of(cfg.yarn)
    if yarn is None:
        return 1.0
    return yarn_inv_freq_and_factor(cfg.qk_rope_head_dim, cfg.rope_theta, yarn.factor,
                                    yarn.original_max_position_embeddings, yarn.beta_fast,
                                    yarn.beta_slow, yarn.mscale, yarn.mscale_all_dim)[1]


def softmax_scale(cfg: MlaConfig) -> float:
    """(qk_nope + qk_rope)^-0.5 * m^2, m = get_mscale(factor, mscale_all_dim) under YaRN."""
    s = cfg.qk_head_dim ** -0.5
    yarn = yarn_of(cfg.yarn)
    if yarn is not None and yarn.mscale_all_dim:
        m = get_mscale(yarn.factor, yarn.mscale_all_dim)
        s = s * m * m
    return s


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def param_shapes(cfg: MlaConfig) -> dict:
    """Local name -> shape, in the order the goldens draw them."""
    d, H = cfg.hidden_size, cfg.heads
    shapes = {}
    if cfg.q_lora_rank > 0:
        shapes["q_a_proj.weight"] = (cfg.q_lora_rank, d)
        shapes["q_a_layernorm.weight"] = (cfg.q_lora_rank,)
        shapes["q_b_proj.weight"] = (H * cfg.qk_head_dim, cfg.q_lora_rank)
    else:
        shapes["q_proj.weight"] = (H * cfg.qk_head_dim, d)
    shapes["kv_a_proj_with_mqa.weight"] = (cfg.kv_lora_rank + cfg.qk_rope_head_dim, d)
    shapes["kv_a_layernorm.weight"] = (cfg.kv_lora_rank,)
    shapes["kv_b_proj.weight"] = (H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
    shapes["o_proj.weight"] = (d, H * cfg.v_head_dim)
    return shapes


def init_params(cfg: MlaConfig, g: torch.Generator, std: float = 0.3, norm_noise: float = 0.2) -> dict:
    """Matrices N(0, std), norm weights 1 + N(0, norm_noise), drawn in param_shapes order."""
    params = {}
    for n, s in param_shapes(cfg).items():
        if ref.is_norm(n):
            params[n] = 1.0 + norm_noise * torch.randn(*s, generator=g)
        else:
            params[n] = std * torch.randn(*s, generator=g)
    return params


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


def _projections(x, p, prefix, cfg: MlaConfig):
    """Shared by both forms: q_nope, rotated q_pe [B,T,H,*], normed latent c [B,T,r], rotated
    k_pe [B,T,1,rope]."""
    B, T, d = x.shape
    H, dn, dr = cfg.heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    eps = cfg.rms_norm_eps
    if cfg.q_lora_rank > 0:
        qa = x @ p[prefix + "q_a_proj.weight"].t()
        q = ref.rms_norm(qa, p[prefix + "q_a_layernorm.weight"], eps) @ p[prefix + "q_b_proj.weight"].t()
    else:
        q = x @ p[prefix + "q_proj.weight"].t()
    q = q.reshape(B, T, H, dn + dr)  # each head [nope | rope]
    q_nope, q_pe = q[..., :dn], q[..., dn:]

    kv_a = x @ p[prefix + "kv_a_proj_with_mqa.weight"].t()  # [c | k_pe]
    c = ref.rms_norm(kv_a[..., : cfg.kv_lora_rank], p[prefix + "kv_a_layernorm.weight"], eps)
    k_pe = kv_a[..., cfg.kv_lora_rank:].reshape(B, T, 1, dr)

    cos, sin = rope_tables(T, dr, cfg.rope_theta, cfg.yarn)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    q_pe = ref.apply_rope(q_pe, cos, sin, cfg.rope_style)
    k_pe = ref.apply_rope(k_pe, cos, sin, cfg.rope_style)
    return q_nope, q_pe, c, k_pe


def _causal_softmax(scores):
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def _sdpa_causal(q, k, v, scale: float):
    """Fused causal attention: q, k [B, H, T, E], v [B, H, T, Ev] -> [B, H, T, Ev], softmax of
    q k^T * scale. The kernels scale by E^-0.5; another scale (YaRN's mscale) goes into q."""
    E = q.shape[-1]
    if scale != E ** -0.5:
        q = q * (scale * math.sqrt(E))
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):  # torch >= 2.0
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    # torch 1.13: private (math) kernel, returns (out, weights)
    return torch.nn.functional._scaled_dot_product_attention(q, k, v, None, 0.0, False, True)[0]


def mla(x: torch.Tensor, p: dict, prefix: str, cfg: MlaConfig, fast: bool = False) -> torch.Tensor:
    """The MLA sublayer without input norm and residual, expanded form. x [B, T, d] -> [B, T, d].
    fast=True (bench/torch_reference.py): the same function with PyTorch's fused causal
    scaled-dot-product attention in place of the explicit score matrix."""
    B, T, d = x.shape
    H, dn, dv = cfg.heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    q_nope, q_pe, c, k_pe = _projections(x, p, prefix, cfg)
    kv = (c @ p[prefix + "kv_b_proj.weight"].t()).reshape(B, T, H, dn + dv)  # each head [k_nope | v]
    k_nope, v = kv[..., :dn], kv[..., dn:]

    q = torch.cat([q_nope, q_pe], dim=-1)  # [B, T, H, dn + dr]
    k = torch.cat([k_nope, k_pe.expand(B, T, H, cfg.qk_rope_head_dim)], dim=-1)
    if fast:
        out = _sdpa_causal(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                           softmax_scale(cfg)).transpose(1, 2).reshape(B, T, H * dv)
        return out @ p[prefix + "o_proj.weight"].t()
    scores = torch.einsum("bthd,bshd->bhts", q, k) * softmax_scale(cfg)  # [B, H, T, T]
    probs = _causal_softmax(scores)
    out = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, H * dv)
    return out @ p[prefix + "o_proj.weight"].t()


def mla_absorbed(x: torch.Tensor, p: dict, prefix: str, cfg: MlaConfig) -> torch.Tensor:
    """The same function in the absorbed (decoding) form: per head i, q~_i = W_UK,i^T q_nope,i,
    scores q~_i . c_s + q_pe,i . k_pe,s, o_i = W_UV,i sum_s p_s c_s."""
    B, T, d = x.shape
    H, dn, dv, r = cfg.heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    q_nope, q_pe, c, k_pe = _projections(x, p, prefix, cfg)
    w = p[prefix + "kv_b_proj.weight"].reshape(H, dn + dv, r)
    w_uk, w_uv = w[:, :dn], w[:, dn:]  # [H, dn, r], [H, dv, r]
    q_lat = torch.einsum("bthd,hdr->bthr", q_nope, w_uk)
    scores = (torch.einsum("bthr,bsr->bhts", q_lat, c)
              + torch.einsum("bthd,bsd->bhts", q_pe, k_pe[:, :, 0])) * softmax_scale(cfg)
    probs = _causal_softmax(scores)
    o_lat = torch.einsum("bhts,bsr->bthr", probs, c)
    out = torch.einsum("bthr,hvr->bthv", o_lat, w_uv).reshape(B, T, H * dv)
    return out @ p[prefix + "o_proj.weight"].t()


def scores_of(x, p, prefix, cfg: MlaConfig):
    """Scaled pre-softmax scores [B, H, T, T] (for statistics)."""
    B, T, _ = x.shape
    H, dn, dv = cfg.heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    q_nope, q_pe, c, k_pe = _projections(x, p, prefix, cfg)
    kv = (c @ p[prefix + "kv_b_proj.weight"].t()).reshape(B, T, H, dn + dv)
    q = torch.cat([q_nope, q_pe], dim=-1)
    k = torch.cat([kv[..., :dn], k_pe.expand(B, T, H, cfg.qk_rope_head_dim)], dim=-1)
    return torch.einsum("bthd,bshd->bhts", q, k) * softmax_scale(cfg)


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-30)).item()


def _yarn_by_hand(dim, theta, factor, L, beta_fast, beta_slow, mscale, mscale_all_dim):
    """An independent scalar re-derivation (DeepSeek-V3 inference/model.py's formulation:
    freqs / factor * (1 - smooth) + freqs * smooth) in plain Python floats."""
    def corr(rot):  # the pair index j at which pos L turns rot times: L theta^(-2j/dim) = 2 pi rot
        return math.log(L / (2 * math.pi * rot)) / math.log(theta) * dim / 2
    lo = max(int(math.floor(corr(beta_fast))), 0)
    hi = min(int(math.ceil(corr(beta_slow))), dim - 1)
    hi_f = hi + 0.001 if lo == hi else float(hi)
    out = []
    for j in range(dim // 2):
        freq = 1.0 / theta ** (2 * j / dim)
        smooth = 1.0 - min(max((j - lo) / (hi_f - lo), 0.0), 1.0)
        out.append(freq / factor * (1 - smooth) + freq * smooth)

    def ms(s, m):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
    af = ms(factor, mscale) / ms(factor, mscale_all_dim) if (mscale and mscale_all_dim) else ms(factor, 1.0)
    return out, af, (lo, hi)


def _fast_vs_explicit(x, p, cfg: MlaConfig) -> float:
    """Worst relative difference of y, dx and every parameter gradient between mla(fast=True)
    and mla(fast=False), fp32 (its own generator: the other checks draw what they drew before)."""
    g = torch.Generator().manual_seed(23)
    res = []
    dy = None
    for fast in (False, True):
        xi = x.detach().clone().requires_grad_(True)
        pi = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
        y = mla(xi, pi, "", cfg, fast=fast)
        if dy is None:
            dy = torch.randn(y.shape, generator=g)
        (y * dy).sum().backward()
        res.append((y, xi.grad, {k: v.grad for k, v in pi.items()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = res
    return max([_rel(y1, y0), _rel(gx1, gx0)] + [_rel(gp1[k], gp0[k]) for k in gp0])


def self_check(cases=None):
    """(a) absorbed vs expanded form, (b) fp32 vs fp64 gradients, (c) YaRN tables against a
    scalar re-derivation, (d) native interleaved rotation vs Hugging Face's de-interleave +
    rotate_half give the same scores, (e) no-YaRN tables are model.rope_cos_sin, (f) the
    fused-attention form (fast=True) is the explicit one, values and gradients."""
    g = torch.Generator().manual_seed(17)
    if cases is None:
        cases = {
            "q_lora interleaved": MlaConfig(),
            "q_proj rotate_half": MlaConfig(q_lora_rank=0, rope_style=ROTATE_HALF),
            "yarn": MlaConfig(yarn=YarnConfig(4.0, 16, 32.0, 1.0, 1.0, 0.8)),
        }
    worst_abs32 = worst_abs64 = worst_grad = worst_fast = 0.0
    for name, cfg in cases.items():
        p = init_params(cfg, g)
        x = torch.randn(2, 33, cfg.hidden_size, generator=g)
        # (a) absorbed form.
        y = mla(x, p, "", cfg)
        ya = mla_absorbed(x, p, "", cfg)
        e32 = _rel(ya, y)
        p64 = {k: v.double() for k, v in p.items()}
        e64 = _rel(mla_absorbed(x.double(), p64, "", cfg), mla(x.double(), p64, "", cfg))
        assert e32 < 1e-5 and e64 < 1e-12, (name, e32, e64)
        worst_abs32, worst_abs64 = max(worst_abs32, e32), max(worst_abs64, e64)
        # (f) the fused-attention form (fast=True) against the explicit one, with gradients.
        ef = _fast_vs_explicit(x, p, cfg)
        assert ef < 1e-5, (name, ef)
        worst_fast = max(worst_fast, ef)
        # (b) fp32 vs fp64 gradients of sum(y * dy).
        dy = torch.randn(y.shape, generator=g)
        res = {}
        for dt in (torch.float32, torch.float64):
            xi = x.detach().to(dt).clone().requires_grad_(True)
            pi = {k: v.detach().to(dt).clone().requires_grad_(True) for k, v in p.items()}
            yi = mla(xi, pi, "", cfg)
            (yi * dy.to(dt)).sum().backward()
            res[dt] = (yi, xi.grad, {k: v.grad for k, v in pi.items()})
        (y32, gx32, gp32), (y64, gx64, gp64) = res[torch.float32], res[torch.float64]
        w = max([_rel(y32, y64), _rel(gx32, gx64)] + [_rel(gp32[k], gp64[k]) for k in gp32])
        assert w < 1e-5, (name, w)
        worst_grad = max(worst_grad, w)
        s = scores_of(x, p, "", cfg)
        pr = _causal_softmax(s)
        causal = torch.ones(s.shape[-1], s.shape[-1], dtype=torch.bool).tril()
        print(f"  {name}: absorbed vs expanded {e32:.1e} (fp32) {e64:.1e} (fp64); fp32 vs fp64 "
              f"y/grads worst {w:.1e}; scaled scores std {s[..., causal].std().item():.2f}, "
              f"mean max prob {pr.max(-1)[0].mean().item():.2f}")

    # (c) YaRN tables against the scalar re-derivation, including DeepSeek-V3's real settings
    # (dim 64, theta 1e4, factor 40, L 4096, mscale = mscale_all_dim = 1) and cases with a
    # fractional ramp, low == high, and one of mscale / mscale_all_dim zero.
    yarn_cases = [
        (4, 10000.0, 4.0, 16, 32.0, 1.0, 1.0, 0.8),      # the golden's settings
        (64, 10000.0, 40.0, 4096, 32.0, 1.0, 1.0, 1.0),  # DeepSeek-V3
        (64, 10000.0, 40.0, 4096, 32.0, 1.0, 0.707, 0.707),  # DeepSeek-V2
        (16, 500.0, 8.0, 64, 8.0, 0.5, 1.0, 0.0),        # mscale_all_dim 0: get_mscale(f)
        (16, 10000.0, 2.5, 256, 4.0, 3.0, 0.0, 1.0),     # mscale 0: get_mscale(f)
        (32, 10000.0, 4.0, 2048, 32.0, 32.0, 1.0, 0.5),  # beta_fast == beta_slow
        (8, 10000.0, 1.0, 16, 32.0, 1.0, 1.0, 1.0),      # factor 1
    ]
    worst_t = worst_inv = 0.0
    for dim, theta, f, L, bf, bs, m, mad in yarn_cases:
        inv, af = yarn_inv_freq_and_factor(dim, theta, f, L, bf, bs, m, mad)
        inv_h, af_h, (lo, hi) = _yarn_by_hand(dim, theta, f, L, bf, bs, m, mad)
        e = max(abs(a - b) / b for a, b in zip(inv.tolist(), inv_h))
        assert e < 1e-14 and abs(af - af_h) < 1e-15, (dim, e, af, af_h)
        T = 40
        cos, sin = rope_tables(T, dim, theta, YarnConfig(f, L, bf, bs, m, mad))
        ang = torch.arange(T, dtype=torch.float64)[:, None] * torch.tensor(inv_h, dtype=torch.float64)
        e_t = max(_rel(cos, torch.cos(ang) * af_h), _rel(sin, torch.sin(ang) * af_h))
        assert e_t < 1e-7, e_t
        worst_t, worst_inv = max(worst_t, e_t), max(worst_inv, e)
    # The golden's table: pair 0 extrapolated (inv 1), pair 1 interpolated (theta^-1/2 / 4).
    inv, af = yarn_inv_freq_and_factor(4, 10000.0, 4.0, 16, 32.0, 1.0, 1.0, 0.8)
    assert torch.allclose(inv, torch.tensor([1.0, 0.0025], dtype=torch.float64), rtol=1e-15, atol=0)
    yc = YarnConfig(4.0, 16, 32.0, 1.0, 1.0, 0.8)
    print(f"  YaRN inv_freq vs scalar re-derivation: {len(yarn_cases)} configs, worst relative "
          f"{worst_inv:.1e}; tables to {worst_t:.1e} (float32 rounding); golden's inv_freq "
          f"{inv.tolist()}, attention_factor {af:.9f}, softmax scale x"
          f"{softmax_scale(MlaConfig(yarn=yc)) / MlaConfig().qk_head_dim ** -0.5:.9f}")

    # (d) Hugging Face's interleave path (4.x: de-interleave to [evens | odds], then rotate_half
    # with cat(cos, cos); 5.x: the same output from the even/odd slices directly) permutes the
    # rotated rope slice of q and k alike, so q_pe . k_pe is that of the native rotation.
    q = torch.randn(2, 9, 3, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 9, 1, 8, generator=g, dtype=torch.float64)
    cos, sin = rope_tables(9, 8, 10000.0, YarnConfig(4.0, 4, 32.0, 1.0, 1.0, 0.5))
    cos, sin = cos.double(), sin.double()

    def hf_interleave(t):
        b, s, h, dd = t.shape
        t = t.reshape(b, s, h, dd // 2, 2).transpose(4, 3).reshape(b, s, h, dd)
        c2, s2 = torch.cat([cos, cos], -1)[None, :, None], torch.cat([sin, sin], -1)[None, :, None]
        rot = torch.cat([-t[..., dd // 2:], t[..., : dd // 2]], -1)
        return t * c2 + rot * s2
    native = torch.einsum("bthd,bshd->bhts", ref.apply_rope(q, cos, sin, INTERLEAVED),
                          ref.apply_rope(k, cos, sin, INTERLEAVED).expand(2, 9, 3, 8))
    hf = torch.einsum("bthd,bshd->bhts", hf_interleave(q), hf_interleave(k).expand(2, 9, 3, 8))
    assert _rel(native, hf) < 1e-14
    # (e) Without YaRN (or with factor 1) the tables are model.rope_cos_sin.
    c0, s0 = ref.rope_cos_sin(33, 4, 10000.0)
    c1, s1 = rope_tables(33, 4, 10000.0)
    c2, s2 = rope_tables(33, 4, 10000.0, YarnConfig(1.0, 16))
    assert torch.equal(c0, c1) and torch.equal(s0, s1) and torch.equal(c0, c2) and torch.equal(s0, s2)
    print("  HF de-interleave + rotate_half = native interleaved scores; no-YaRN tables = "
          "model.rope_cos_sin")
    print(f"  fused attention (fast=True) vs explicit scores: y and grads worst {worst_fast:.1e}")
    print("  MLA self-checks passed")


if __name__ == "__main__":
    torch.set_num_threads(1)
    self_check()
