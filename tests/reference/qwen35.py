"""Independent PyTorch reference forward of a Qwen3.5-style hybrid MoE model as the
`qwen3_5_moe_text` export lays it out (transformers' Qwen3_5MoeForCausalLM, text only, no
cache, no padding), for tests/reference/check_export.py.

Written from the Hugging Face model's definition and the Gated DeltaNet paper, not from
moetron's C++: the linear attention is gdn.py's (its naive per-token recurrence), the RMSNorm,
RoPE rotation, causal attention and SwiGLU are model.py's, the top-k is moe.py's order_desc.
fp32 unless the parameters are fp64; plain tensors; parameters in a dict keyed by the exported
names. Runs on torch 1.13.

Parameters (the exported names; Hk/dk, Hv/dv the linear key/value heads, K the conv taps, H/KV
the attention heads of head_dim hd, E experts of width I, Is the shared expert's width):

  model.embed_tokens.weight [V, d]        model.norm.weight [d]        lm_head.weight [V, d]
  model.layers.l.input_layernorm.weight [d], .post_attention_layernorm.weight [d]
  linear_attention layers, model.layers.l.linear_attn.:
    in_proj_qkv.weight [2 Hk dk + Hv dv, d]   rows [q (Hk dk) | k (Hk dk) | v (Hv dv)]
    in_proj_z.weight [Hv dv, d]   in_proj_b.weight [Hv, d]   in_proj_a.weight [Hv, d]
    conv1d.weight [2 Hk dk + Hv dv, 1, K]     channels in in_proj_qkv's order
    A_log [Hv]   dt_bias [Hv]   norm.weight [dv]   out_proj.weight [d, Hv dv]
  full_attention layers, model.layers.l.self_attn.:
    q_proj.weight [H 2 hd, d]   rows per head h: [query_h (hd) | gate_h (hd)]
    k_proj.weight, v_proj.weight [KV hd, d]   q_norm.weight, k_norm.weight [hd]
    o_proj.weight [d, H hd]
  every layer, model.layers.l.mlp.:
    gate.weight [E, d] (router, no bias)   experts.e.{gate,up}_proj.weight [I, d],
    experts.e.down_proj.weight [d, I]      shared_expert.{gate,up}_proj.weight [Is, d],
    shared_expert.down_proj.weight [d, Is] shared_expert_gate.weight [1, d]

Forward, tokens [B, T]:

  zc_norm(x, w)    = x rsqrt(mean(x^2) + eps) (1 + w)        every norm but GDN's (zero-centred)
  h = embed[tokens]; per layer l:
    h += mixer_l(zc_norm(h, input_layernorm)); h += moe(zc_norm(h, post_attention_layernorm))
  logits = zc_norm(h, model.norm) lm_head^T

  linear attention: in_proj_qkv split back into gdn.py's in_proj_q/_k/_v (and conv1d into
    conv1d_q/_k/_v [C, K]), then gdn.gdn: causal depthwise conv + SiLU, L2-normed q (times
    dk^-0.5) and k, beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias), the gated delta
    rule, GDN's gated norm rms_norm(o, norm.weight) silu(z) with the plain weight, out_proj.
  gated attention: q_proj viewed [B, T, H, 2 hd] -> query, gate; q = zc_norm(query, q_norm),
    k = zc_norm(k_proj x, k_norm) per head; RoPE (rotate_half) on the first
    rot = int(hd partial_rotary_factor) dims of each head only, inv_freq_j = theta^(-2j/rot),
    the rest passed through; causal GQA softmax attention with scale hd^-0.5 (query head h reads
    key head h // (H/KV)); o * sigmoid(gate) elementwise, then o_proj.
  moe: p = softmax(x gate^T) over all experts; the top k (ties to the lower index), weights
    renormalised to sum 1 (no bias, no scaling); y = sum_j w_j SwiGLU_{e_j}(x)
    + sigmoid(x shared_expert_gate^T) SwiGLU_shared(x).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gdn as gdn_ref  # noqa: E402
import model as ref  # noqa: E402
import moe as moe_ref  # noqa: E402

LINEAR = "linear_attention"
FULL = "full_attention"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class Qwen35Config:
    vocab_size: int = 256
    hidden_size: int = 32
    num_hidden_layers: int = 4
    layer_types: list = field(default_factory=lambda: [LINEAR, LINEAR, LINEAR, FULL])
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 8
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.25
    rms_norm_eps: float = 1e-6
    linear_num_key_heads: int = 2
    linear_key_head_dim: int = 8
    linear_num_value_heads: int = 4
    linear_value_head_dim: int = 6
    linear_conv_kernel_dim: int = 4
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 16
    shared_expert_intermediate_size: int = 16
    tie_word_embeddings: bool = False

    @property
    def rotary_dim(self) -> int:
        """transformers' int(head_dim * partial_rotary_factor)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def gdn(self) -> gdn_ref.GdnConfig:
        return gdn_ref.GdnConfig(
            hidden_size=self.hidden_size, linear_num_key_heads=self.linear_num_key_heads,
            linear_key_head_dim=self.linear_key_head_dim,
            linear_num_value_heads=self.linear_num_value_heads,
            linear_value_head_dim=self.linear_value_head_dim,
            linear_conv_kernel_dim=self.linear_conv_kernel_dim, rms_norm_eps=self.rms_norm_eps)


def config_from_json(cfg: dict) -> Qwen35Config:
    """The model a qwen3_5_moe_text config.json describes, read as transformers reads it: the
    RoPE fields from rope_parameters (or, legacy, top level), partial_rotary_factor 0.25 and
    rope_theta 10000 when absent (transformers' defaults; check_export.py separately requires
    both to be written), layer_types as given."""
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    factor = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.25))
    return Qwen35Config(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"], layer_types=list(cfg["layer_types"]),
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], head_dim=cfg["head_dim"],
        rope_theta=float(theta), partial_rotary_factor=float(factor),
        rms_norm_eps=cfg["rms_norm_eps"], linear_num_key_heads=cfg["linear_num_key_heads"],
        linear_key_head_dim=cfg["linear_key_head_dim"],
        linear_num_value_heads=cfg["linear_num_value_heads"],
        linear_value_head_dim=cfg["linear_value_head_dim"],
        linear_conv_kernel_dim=cfg["linear_conv_kernel_dim"], num_experts=cfg["num_experts"],
        num_experts_per_tok=cfg["num_experts_per_tok"],
        moe_intermediate_size=cfg["moe_intermediate_size"],
        shared_expert_intermediate_size=cfg["shared_expert_intermediate_size"],
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)))


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def layer_param_shapes(cfg: Qwen35Config, layer_type: str) -> dict:
    """Local names (under model.layers.l.) -> shapes."""
    d = cfg.hidden_size
    shapes = {"input_layernorm.weight": (d,)}
    if layer_type == LINEAR:
        g = cfg.gdn
        C, Hv, dv = g.conv_dim, g.linear_num_value_heads, g.linear_value_head_dim
        shapes.update({
            "linear_attn.in_proj_qkv.weight": (C, d),
            "linear_attn.in_proj_z.weight": (g.value_dim, d),
            "linear_attn.in_proj_b.weight": (Hv, d),
            "linear_attn.in_proj_a.weight": (Hv, d),
            "linear_attn.conv1d.weight": (C, 1, g.linear_conv_kernel_dim),
            "linear_attn.A_log": (Hv,),
            "linear_attn.dt_bias": (Hv,),
            "linear_attn.norm.weight": (dv,),
            "linear_attn.out_proj.weight": (d, g.value_dim),
        })
    elif layer_type == FULL:
        H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        shapes.update({
            "self_attn.q_proj.weight": (2 * H * hd, d),
            "self_attn.k_proj.weight": (KV * hd, d),
            "self_attn.v_proj.weight": (KV * hd, d),
            "self_attn.q_norm.weight": (hd,),
            "self_attn.k_norm.weight": (hd,),
            "self_attn.o_proj.weight": (d, H * hd),
        })
    else:
        raise ValueError(f"layer type {layer_type!r}")
    shapes["post_attention_layernorm.weight"] = (d,)
    E, I, Is = cfg.num_experts, cfg.moe_intermediate_size, cfg.shared_expert_intermediate_size
    shapes["mlp.gate.weight"] = (E, d)
    for e in range(E):
        shapes[f"mlp.experts.{e}.gate_proj.weight"] = (I, d)
        shapes[f"mlp.experts.{e}.up_proj.weight"] = (I, d)
        shapes[f"mlp.experts.{e}.down_proj.weight"] = (d, I)
    shapes["mlp.shared_expert.gate_proj.weight"] = (Is, d)
    shapes["mlp.shared_expert.up_proj.weight"] = (Is, d)
    shapes["mlp.shared_expert.down_proj.weight"] = (d, Is)
    shapes["mlp.shared_expert_gate.weight"] = (1, d)
    return shapes


def param_shapes(cfg: Qwen35Config) -> dict:
    """Every parameter of the main model (no MTP module) -> shape; lm_head.weight only when
    untied."""
    assert len(cfg.layer_types) == cfg.num_hidden_layers, cfg.layer_types
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden_size)}
    for l, t in enumerate(cfg.layer_types):
        for n, s in layer_param_shapes(cfg, t).items():
            shapes[f"model.layers.{l}.{n}"] = s
    shapes["model.norm.weight"] = (cfg.hidden_size,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, cfg.hidden_size)
    return shapes


def init_params(cfg: Qwen35Config, g: torch.Generator, std: float = 0.1) -> dict:
    """A test initialisation (self_check): every weight N(0, std), the zero-centred norms
    N(0, 0.1), GDN's norm 1 + N(0, 0.2), A_log log U(1, 4), dt_bias N(0, 0.5)."""
    p = {}
    for n, s in param_shapes(cfg).items():
        if n.endswith("linear_attn.norm.weight"):
            p[n] = 1.0 + 0.2 * torch.randn(*s, generator=g)
        elif n.endswith("norm.weight"):
            p[n] = 0.1 * torch.randn(*s, generator=g)
        elif n.endswith("A_log"):
            p[n] = torch.log(1.0 + 3.0 * torch.rand(*s, generator=g))
        elif n.endswith("dt_bias"):
            p[n] = 0.5 * torch.randn(*s, generator=g)
        else:
            p[n] = std * torch.randn(*s, generator=g)
    return p


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def zc_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero-centred RMSNorm: x rsqrt(mean(x^2) + eps) (1 + w)."""
    return ref.rms_norm(x, 1.0 + w, eps)


def partial_rope(x: torch.Tensor, rot: int, theta: float) -> torch.Tensor:
    """x [B, T, heads, hd]: rotate_half RoPE on dims [0, rot) (pairs (j, j + rot/2), angle
    pos theta^(-2j/rot)), dims [rot, hd) unchanged."""
    T = x.shape[1]
    cos, sin = ref.rope_cos_sin(T, rot, theta)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotated = ref.apply_rope(x[..., :rot], cos, sin, ref.ROTATE_HALF)
    return torch.cat([rotated, x[..., rot:]], dim=-1)


def gated_attention(x: torch.Tensor, p: dict, prefix: str, cfg: Qwen35Config) -> torch.Tensor:
    """The full_attention mixer (no norm, no residual), x [B, T, d] -> [B, T, d]."""
    B, T, _ = x.shape
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qg = (x @ p[prefix + "q_proj.weight"].t()).view(B, T, H, 2 * hd)
    query, gate = qg[..., :hd], qg[..., hd:]
    k = (x @ p[prefix + "k_proj.weight"].t()).view(B, T, KV, hd)
    v = (x @ p[prefix + "v_proj.weight"].t()).view(B, T, KV, hd)
    q = zc_norm(query, p[prefix + "q_norm.weight"], cfg.rms_norm_eps)
    k = zc_norm(k, p[prefix + "k_norm.weight"], cfg.rms_norm_eps)
    q = partial_rope(q, cfg.rotary_dim, cfg.rope_theta)
    k = partial_rope(k, cfg.rotary_dim, cfg.rope_theta)
    o = ref.attention_core(q, k, v) * torch.sigmoid(gate)  # [B, T, H, hd], scale hd^-0.5
    return o.reshape(B, T, H * hd) @ p[prefix + "o_proj.weight"].t()


def split_linear_attn(p: dict, prefix: str, cfg: Qwen35Config) -> dict:
    """The exported linear_attn.* parameters under gdn.py's local names: in_proj_qkv's rows and
    conv1d's channels split into q, k, v (conv [C, 1, K] -> [C, K])."""
    g = cfg.gdn
    parts = [g.key_dim, g.key_dim, g.value_dim]
    W = lambda n: p[prefix + n]  # noqa: E731
    out = {}
    for name, t in zip(("in_proj_q.weight", "in_proj_k.weight", "in_proj_v.weight"),
                       torch.split(W("in_proj_qkv.weight"), parts, dim=0)):
        out[name] = t
    conv = W("conv1d.weight")
    assert conv.dim() == 3 and conv.shape[1] == 1, tuple(conv.shape)
    for name, t in zip(("conv1d_q.weight", "conv1d_k.weight", "conv1d_v.weight"),
                       torch.split(conv[:, 0, :], parts, dim=0)):
        out[name] = t
    for n in ("in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight", "A_log", "dt_bias",
              "norm.weight", "out_proj.weight"):
        out[n] = W(n)
    return out


def linear_attention(x: torch.Tensor, p: dict, prefix: str, cfg: Qwen35Config) -> torch.Tensor:
    """The linear_attention mixer (gdn.py's Gated DeltaNet), x [B, T, d] -> [B, T, d]."""
    y, _ = gdn_ref.gdn(x, split_linear_attn(p, prefix, cfg), "", cfg.gdn)
    return y


def sparse_moe(x: torch.Tensor, p: dict, prefix: str, cfg: Qwen35Config) -> torch.Tensor:
    """The MoE FFN, x [N, d] -> [N, d]: softmax router, top-k renormalised, no bias; the shared
    expert times sigmoid(x shared_expert_gate^T)."""
    N, d = x.shape
    k = cfg.num_experts_per_tok
    probs = torch.softmax(x @ p[prefix + "gate.weight"].t(), dim=-1)  # [N, E]
    idx = moe_ref.order_desc(probs)[:, :k]                             # [N, k]
    w = probs.gather(1, idx)
    w = w / w.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(x)
    for e in range(cfg.num_experts):
        t, j = (idx == e).nonzero(as_tuple=True)
        if t.numel() == 0:
            continue
        out = ref.swiglu(x.index_select(0, t), p, f"{prefix}experts.{e}.")
        y = y.index_add(0, t, out * w[t, j][:, None])
    shared = ref.swiglu(x, p, prefix + "shared_expert.")
    return y + torch.sigmoid(x @ p[prefix + "shared_expert_gate.weight"].t()) * shared


def block(x: torch.Tensor, p: dict, prefix: str, cfg: Qwen35Config, layer_type: str) -> torch.Tensor:
    a = zc_norm(x, p[prefix + "input_layernorm.weight"], cfg.rms_norm_eps)
    if layer_type == LINEAR:
        h = x + linear_attention(a, p, prefix + "linear_attn.", cfg)
    elif layer_type == FULL:
        h = x + gated_attention(a, p, prefix + "self_attn.", cfg)
    else:
        raise ValueError(f"layer type {layer_type!r}")
    m = zc_norm(h, p[prefix + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
    B, T, d = m.shape
    return h + sparse_moe(m.reshape(B * T, d), p, prefix + "mlp.", cfg).view(B, T, d)


def hidden_states(p: dict, cfg: Qwen35Config, tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, T] -> the last hidden state after model.norm, [B, T, d]."""
    x = p["model.embed_tokens.weight"][tokens.long()]
    for l, t in enumerate(cfg.layer_types):
        x = block(x, p, f"model.layers.{l}.", cfg, t)
    return zc_norm(x, p["model.norm.weight"], cfg.rms_norm_eps)


def logits_of(p: dict, cfg: Qwen35Config, tokens: torch.Tensor) -> torch.Tensor:
    """The main head's logits [B*T, V]."""
    head = p["model.embed_tokens.weight"] if cfg.tie_word_embeddings else p["lm_head.weight"]
    return (hidden_states(p, cfg, tokens) @ head.t()).reshape(-1, cfg.vocab_size)


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-30)).item()


def self_check():
    """(a) partial_rope against complex multiplication on the first rot dims, the others
    untouched, and equal to model.apply_rope when rot = hd; (b) the GDN mixer on the fused
    weights against a direct evaluation of the fused form (in_proj_qkv, F.conv1d with groups
    = C, padding K-1, as Hugging Face runs it); (c) the MoE against a per-token loop with
    torch.topk; (d) gated attention against a per-head loop; (e) the fp32 model against fp64."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(35)
    cfg = Qwen35Config(vocab_size=61, hidden_size=32, head_dim=12, partial_rotary_factor=0.5)
    B, T = 2, 70  # T > 64: past one 64-token chunk of Hugging Face's chunked form

    # (a) partial RoPE.
    x = torch.randn(B, T, 3, 12, generator=g, dtype=torch.float64)
    rot = 6
    y = partial_rope(x, rot, 1e4)
    j = torch.arange(rot // 2, dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * 1e4 ** (-2 * j / rot)
    z = torch.complex(x[..., : rot // 2], x[..., rot // 2 : rot]) * torch.polar(
        torch.ones_like(ang), ang)[None, :, None, :]
    want = torch.cat([z.real, z.imag, x[..., rot:]], dim=-1)
    e_rope = _rel(y, want)
    cos, sin = ref.rope_cos_sin(T, 12, 1e4)
    e_full = _rel(partial_rope(x.float(), 12, 1e4), ref.apply_rope(x.float(), cos, sin, ref.ROTATE_HALF))
    assert e_rope < 1e-6 and e_full == 0.0 and torch.equal(y[..., rot:], x[..., rot:]), (e_rope, e_full)

    p = {k: v.double() for k, v in init_params(cfg, g).items()}
    h = torch.randn(B, T, cfg.hidden_size, generator=g, dtype=torch.float64)

    # (b) GDN on the fused weights, directly.
    pre = "model.layers.0.linear_attn."
    gc = cfg.gdn
    qkv = h @ p[pre + "in_proj_qkv.weight"].t()
    c = F.conv1d(qkv.transpose(1, 2), p[pre + "conv1d.weight"], groups=gc.conv_dim,
                 padding=gc.linear_conv_kernel_dim - 1)[..., :T].transpose(1, 2)
    m = F.silu(c)
    Hk, dk, Hv, dv = gc.linear_num_key_heads, gc.linear_key_head_dim, gc.linear_num_value_heads, \
        gc.linear_value_head_dim
    q = m[..., : gc.key_dim].reshape(B, T, Hk, dk)
    k = m[..., gc.key_dim : 2 * gc.key_dim].reshape(B, T, Hk, dk)
    v = m[..., 2 * gc.key_dim :].reshape(B, T, Hv, dv)
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6) / math.sqrt(dk)
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    beta = torch.sigmoid(h @ p[pre + "in_proj_b.weight"].t())
    gl = -p[pre + "A_log"].exp() * F.softplus(h @ p[pre + "in_proj_a.weight"].t() + p[pre + "dt_bias"])
    o, _ = gdn_ref.chunk_gated_delta_rule(q, k, v, gl, beta)
    zz = (h @ p[pre + "in_proj_z.weight"].t()).reshape(B, T, Hv, dv)
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * p[pre + "norm.weight"] \
        * zz * torch.sigmoid(zz)
    want = o.reshape(B, T, Hv * dv) @ p[pre + "out_proj.weight"].t()
    e_gdn = _rel(linear_attention(h, p, pre, cfg), want)
    assert e_gdn < 1e-10, e_gdn

    # (c) MoE against a per-token loop with torch.topk.
    pre = "model.layers.0.mlp."
    xs = h.reshape(B * T, -1)
    got = sparse_moe(xs, p, pre, cfg)
    rows = []
    for t in range(xs.shape[0]):
        pr = torch.softmax(xs[t] @ p[pre + "gate.weight"].t(), -1)
        tv, ti = pr.topk(cfg.num_experts_per_tok)
        tv = tv / tv.sum()
        r = sum(tv[jj] * ref.swiglu(xs[t : t + 1], p, f"{pre}experts.{int(ti[jj])}.")[0]
                for jj in range(len(ti)))
        sg = torch.sigmoid(xs[t] @ p[pre + "shared_expert_gate.weight"][0])
        rows.append(r + sg * ref.swiglu(xs[t : t + 1], p, pre + "shared_expert.")[0])
    e_moe = _rel(got, torch.stack(rows))
    assert e_moe < 1e-12, e_moe

    # (d) gated attention against a per-head loop.
    pre = "model.layers.3.self_attn."
    H, KV, hd, rot = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rotary_dim
    outs = []
    for hh in range(H):
        wq = p[pre + "q_proj.weight"][hh * 2 * hd : hh * 2 * hd + hd]
        wg = p[pre + "q_proj.weight"][hh * 2 * hd + hd : (hh + 1) * 2 * hd]
        kv = hh // (H // KV)
        wk = p[pre + "k_proj.weight"][kv * hd : (kv + 1) * hd]
        wv = p[pre + "v_proj.weight"][kv * hd : (kv + 1) * hd]
        qh = zc_norm(h @ wq.t(), p[pre + "q_norm.weight"], cfg.rms_norm_eps)
        kh = zc_norm(h @ wk.t(), p[pre + "k_norm.weight"], cfg.rms_norm_eps)
        qh = partial_rope(qh[:, :, None], rot, cfg.rope_theta)[:, :, 0]
        kh = partial_rope(kh[:, :, None], rot, cfg.rope_theta)[:, :, 0]
        s = (qh @ kh.transpose(1, 2)) / math.sqrt(hd)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        outs.append((s.softmax(-1) @ (h @ wv.t())) * torch.sigmoid(h @ wg.t()))
    want = torch.cat(outs, dim=-1) @ p[pre + "o_proj.weight"].t()
    e_attn = _rel(gated_attention(h, p, pre, cfg), want)
    assert e_attn < 1e-12, e_attn

    # (e) the whole model, fp32 against fp64.
    tokens = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    l64 = logits_of(p, cfg, tokens)
    l32 = logits_of({kk: vv.float() for kk, vv in p.items()}, cfg, tokens)
    e_model = _rel(l32, l64)
    assert e_model < 1e-5, e_model
    print(f"  partial RoPE vs complex multiplication {e_rope:.1e} (rot = hd: model.apply_rope "
          f"exactly); GDN on in_proj_qkv / conv1d [C,1,K] vs the fused form with F.conv1d and "
          f"the chunked rule {e_gdn:.1e}; MoE vs a torch.topk loop {e_moe:.1e}; gated attention "
          f"vs a per-head loop {e_attn:.1e}; model fp32 vs fp64 {e_model:.1e}")
    print("  qwen35 self-checks passed")


if __name__ == "__main__":
    self_check()  # /usr/bin/python3 tests/reference/qwen35.py
