"""Independent PyTorch reference of the network defined in docs/model.md.

Everything is fp32, plain tensors and autograd; parameters live in a dict keyed by their
Hugging Face names (docs/model.md, "Shapes and names"). The functions are written for
clarity, not speed, except where `fast=True` is passed (used by bench/torch_reference.py):
that swaps the explicit causal softmax for PyTorch's fused scaled-dot-product attention,
which computes the same function.

`bf16=True` emulates the C++ trainer's bf16 mixed precision: every projection GEMM goes
through proj(), which rounds its operands to bfloat16 (forward: x and W; backward: dy, W and
x) and accumulates in fp32 (Bf16Linear); the causal attention rounds q, k, v and its output
(backward: dout and dq, dk, dv) to bfloat16 around an fp32 softmax (Bf16Attention), as cuDNN's
fused attention does; everything else stays fp32. bf16=False (the default) is the fp32 model
exactly, bit for bit.

Layout conventions (same as the C++ code):
  * activations are [B, T, d]; per-head tensors are [B, T, heads, hd];
  * linear weights are [out, in] and y = x W^T, no biases;
  * RoPE positions are 0..T-1 within each sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F

ROTATE_HALF = "rotate_half"
INTERLEAVED = "interleaved"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    vocab_size: int = 97
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 0  # 0 means num_attention_heads
    intermediate_size: int = 64
    rope_theta: float = 10000.0
    rope_style: str = ROTATE_HALF
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    num_nextn_predict_layers: int = 0  # D, the MTP depth
    mtp_loss_weight: float = 0.3  # lambda

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        assert self.hidden_size % self.num_attention_heads == 0
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OptimConfig:
    lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # <= 0 disables clipping
    decay_norms_and_embeddings: bool = False


# --------------------------------------------------------------------------------------------
# Projections (fp32, or emulated bf16 mixed precision)
# --------------------------------------------------------------------------------------------


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """r(t): t rounded to bfloat16 (round to nearest even) and widened back to t's dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


class Bf16Linear(torch.autograd.Function):
    """y = r(x) r(W)^T; dx = r(dy) r(W); dW = r(dy)^T r(x); fp32 products and sums.

    Written out (not autograd through bf16_round, which would round dx = dy r(W) after the
    GEMM instead of dy before it). x [..., in], W [out, in]."""

    @staticmethod
    def forward(ctx, x, w):
        xr, wr = bf16_round(x), bf16_round(w)
        ctx.save_for_backward(xr, wr)
        return xr @ wr.t()

    @staticmethod
    def backward(ctx, dy):
        xr, wr = ctx.saved_tensors
        dyr = bf16_round(dy)
        dx = dyr @ wr if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:  # rows of every leading dim summed: [out, N] @ [N, in]
            dw = dyr.reshape(-1, dyr.shape[-1]).t() @ xr.reshape(-1, xr.shape[-1])
        return dx, dw


def proj(x: torch.Tensor, w: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """A projection GEMM y = x W^T: fp32, or with bf16=True the emulated bf16 GEMM."""
    return Bf16Linear.apply(x, w) if bf16 else x @ w.t()


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = x * rsqrt(mean(x^2) + eps) * w, mean over the last dim."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rope_cos_sin(seq_len: int, head_dim: int, theta: float):
    """cos, sin of angle pos * theta^(-2j/hd), shape [T, hd/2], j = 0..hd/2-1.

    The angles are computed in float64 and rounded once to float32, so the tables are the
    correctly rounded values (an fp32 implementation agrees to ~1 ulp).
    """
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * j / head_dim)
    pos = torch.arange(seq_len, dtype=torch.float64)
    angle = pos[:, None] * inv_freq[None, :]
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """x [B, T, heads, hd]; a pair (a, b) becomes (a cos - b sin, b cos + a sin).

    rotate_half pairs element j with j + hd/2; interleaved pairs 2j with 2j+1.
    """
    hd = x.shape[-1]
    c = cos[None, :, None, :]  # [1, T, 1, hd/2]
    s = sin[None, :, None, :]
    if style == ROTATE_HALF:
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)
    if style == INTERLEAVED:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2)
    raise ValueError(f"unknown rope_style {style!r}")


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """Causal attention. q [B, T, H, hd], k/v [B, T, KV, hd] -> [B, T, H, hd].

    Query head h reads key/value head h // (H / KV).
    """
    B, T, H, hd = q.shape
    KV = k.shape[2]
    assert H % KV == 0
    group = H // KV
    q = q.transpose(1, 2)  # [B, H, T, hd]
    k = k.transpose(1, 2).repeat_interleave(group, dim=1)  # [B, H, T, hd]
    v = v.transpose(1, 2).repeat_interleave(group, dim=1)
    if fast:
        if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch 1.13: private (math) kernel, returns (out, weights)
            out = F._scaled_dot_product_attention(q, k, v, None, 0.0, False, True)[0]
    else:
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, T, T]
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2)  # [B, T, H, hd]


class Bf16Attention(torch.autograd.Function):
    """Causal attention with bf16 operands and fp32 inside (docs/precision.md):
    out = r(attn(r(q), r(k), r(v))); backward, with dO = r(dout) and O = out (the rounded
    output, as cuDNN's backward reads its own bf16 output), P the probabilities of the rounded
    operands and D = rowsum(dO * O):
        dS = P (dO V^T - D),  dq = r(scale dS K),  dk = r(scale dS^T Q),  dv = r(P^T dO),
    dk and dv summed over a kv head's query heads before their rounding. Written out rather than
    autograd, which would take D from the unrounded output. q [B, T, H, hd], k [B, T, KV, hd],
    v [B, T, KV, dv], scale 1/sqrt(hd)."""

    @staticmethod
    def forward(ctx, q, k, v):
        qr, kr, vr = bf16_round(q), bf16_round(k), bf16_round(v)
        out = bf16_round(attention_core(qr, kr, vr))
        ctx.save_for_backward(qr, kr, vr, out)
        return out

    @staticmethod
    def backward(ctx, dout):
        qr, kr, vr, out = ctx.saved_tensors
        B, T, H, hd = qr.shape
        KV = kr.shape[2]
        group = H // KV
        scale = 1.0 / math.sqrt(hd)
        q = qr.transpose(1, 2)  # [B, H, T, hd]
        k = kr.transpose(1, 2).repeat_interleave(group, dim=1)
        v = vr.transpose(1, 2).repeat_interleave(group, dim=1)
        o = out.transpose(1, 2)
        do = bf16_round(dout).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * scale
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        dsum = (do * o).sum(dim=-1, keepdim=True)
        ds = probs * (do @ v.transpose(-1, -2) - dsum)
        dq = ds @ k * scale
        dk = (ds.transpose(-1, -2) @ q * scale).view(B, KV, group, T, hd).sum(dim=2)
        dv = (probs.transpose(-1, -2) @ do).view(B, KV, group, T, -1).sum(dim=2)
        return tuple(bf16_round(g.transpose(1, 2)) for g in (dq, dk, dv))


def attention(x: torch.Tensor, p: dict, prefix: str, heads: int, kv_heads: int,
              rope_theta: float, rope_style: str, fast: bool = False, bf16: bool = False) -> torch.Tensor:
    """The attention sublayer without norm and residual:
    o_proj(attn(rope(q_proj x), rope(k_proj x), v_proj x)). x [B, T, d]."""
    B, T, d = x.shape
    hd = p[prefix + "q_proj.weight"].shape[0] // heads
    q = proj(x, p[prefix + "q_proj.weight"], bf16).view(B, T, heads, hd)
    k = proj(x, p[prefix + "k_proj.weight"], bf16).view(B, T, kv_heads, hd)
    v = proj(x, p[prefix + "v_proj.weight"], bf16).view(B, T, kv_heads, hd)
    cos, sin = rope_cos_sin(T, hd, rope_theta)
    q = apply_rope(q, cos, sin, rope_style)
    k = apply_rope(k, cos, sin, rope_style)
    o = (Bf16Attention.apply(q, k, v) if bf16 else attention_core(q, k, v, fast=fast))
    o = o.reshape(B, T, heads * hd)
    return proj(o, p[prefix + "o_proj.weight"], bf16)


def swiglu(x: torch.Tensor, p: dict, prefix: str, bf16: bool = False) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)); the activation is fp32 in either precision."""
    g = proj(x, p[prefix + "gate_proj.weight"], bf16)
    u = proj(x, p[prefix + "up_proj.weight"], bf16)
    return proj(F.silu(g) * u, p[prefix + "down_proj.weight"], bf16)


def block(x: torch.Tensor, p: dict, prefix: str, cfg: ModelConfig, fast: bool = False,
          bf16: bool = False) -> torch.Tensor:
    """Pre-norm block: h = x + attn(norm1 x); y = h + mlp(norm2 h)."""
    a = rms_norm(x, p[prefix + "input_layernorm.weight"], cfg.rms_norm_eps)
    h = x + attention(a, p, prefix + "self_attn.", cfg.num_attention_heads, cfg.kv_heads,
                      cfg.rope_theta, cfg.rope_style, fast=fast, bf16=bf16)
    m = rms_norm(h, p[prefix + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
    return h + swiglu(m, p, prefix + "mlp.", bf16=bf16)


def cross_entropy(h: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE of logits = h W^T against targets. h [..., d], targets [...] (int)."""
    logits = h.reshape(-1, h.shape[-1]) @ head_weight.t()
    return F.cross_entropy(logits, targets.reshape(-1).long())


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

BLOCK_PARAMS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def block_param_shapes(cfg: ModelConfig) -> dict:
    d, hd, H, KV, I = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.kv_heads, cfg.intermediate_size
    return {
        "input_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (H * hd, d),
        "self_attn.k_proj.weight": (KV * hd, d),
        "self_attn.v_proj.weight": (KV * hd, d),
        "self_attn.o_proj.weight": (d, H * hd),
        "post_attention_layernorm.weight": (d,),
        "mlp.gate_proj.weight": (I, d),
        "mlp.up_proj.weight": (I, d),
        "mlp.down_proj.weight": (d, I),
    }


def param_shapes(cfg: ModelConfig) -> dict:
    """Every parameter name -> shape, in the order of the table in docs/model.md."""
    d, V, L = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    shapes = {"model.embed_tokens.weight": (V, d)}
    for l in range(L):
        for n, s in block_param_shapes(cfg).items():
            shapes[f"model.layers.{l}.{n}"] = s
    shapes["model.norm.weight"] = (d,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, d)
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        pre = f"model.layers.{L + k - 1}."
        shapes[pre + "enorm.weight"] = (d,)
        shapes[pre + "hnorm.weight"] = (d,)
        shapes[pre + "eh_proj.weight"] = (d, 2 * d)
        for n, s in block_param_shapes(cfg).items():
            shapes[pre + n] = s
        shapes[pre + "shared_head.norm.weight"] = (d,)
    return shapes


def is_norm(name: str) -> bool:
    return name.endswith("norm.weight")  # *_layernorm, model.norm, enorm, hnorm, shared_head.norm


def init_params(cfg: ModelConfig, generator: torch.Generator, init_std: float = 0.02,
                norm_noise: float = 0.0) -> dict:
    """Projection/embedding weights ~ N(0, init_std); norm weights 1 (+ N(0, norm_noise)).

    Draws in the order of param_shapes(); returns leaf tensors with requires_grad=True.
    """
    params = {}
    for name, shape in param_shapes(cfg).items():
        if is_norm(name):
            t = torch.ones(shape) + norm_noise * torch.randn(shape, generator=generator)
        else:
            t = init_std * torch.randn(shape, generator=generator)
        params[name] = t.float().requires_grad_(True)
    return params


def head_weight(params: dict, cfg: ModelConfig) -> torch.Tensor:
    return params["model.embed_tokens.weight"] if cfg.tie_word_embeddings else params["lm_head.weight"]


# --------------------------------------------------------------------------------------------
# Model and loss
# --------------------------------------------------------------------------------------------


def model_loss(params: dict, cfg: ModelConfig, window: torch.Tensor, fast: bool = False,
               mtp_loss_weight: float | None = None, bf16: bool = False) -> dict:
    """window [B, T+1+D] int tokens -> {"total", "main", "mtp": [D] (each CE_k unweighted)}.
    bf16: the projections (q/k/v/o, gate/up/down, eh_proj) as emulated bf16 GEMMs (proj)."""
    D = cfg.num_nextn_predict_layers
    L = cfg.num_hidden_layers
    lam = cfg.mtp_loss_weight if mtp_loss_weight is None else mtp_loss_weight
    window = window.long()
    T = window.shape[1] - 1 - D
    embed = params["model.embed_tokens.weight"]
    W = head_weight(params, cfg)

    x = embed[window[:, 0:T]]
    for l in range(L):
        x = block(x, params, f"model.layers.{l}.", cfg, fast=fast, bf16=bf16)
    h = rms_norm(x, params["model.norm.weight"], cfg.rms_norm_eps)  # h_0: after the final norm
    main = cross_entropy(h, W, window[:, 1 : T + 1])

    mtp = []
    for k in range(1, D + 1):
        pre = f"model.layers.{L + k - 1}."
        e = rms_norm(embed[window[:, k : k + T]], params[pre + "enorm.weight"], cfg.rms_norm_eps)
        hn = rms_norm(h, params[pre + "hnorm.weight"], cfg.rms_norm_eps)
        # Embedding first.
        xk = proj(torch.cat([e, hn], dim=-1), params[pre + "eh_proj.weight"], bf16)
        # h_k = shared_head.norm(block output): the head's input and the next module's h.
        h = rms_norm(block(xk, params, pre, cfg, fast=fast, bf16=bf16),
                     params[pre + "shared_head.norm.weight"], cfg.rms_norm_eps)
        mtp.append(cross_entropy(h, W, window[:, k + 1 : k + 1 + T]))

    total = main
    if D > 0:
        total = main + (lam / D) * torch.stack(mtp).sum()
    return {"total": total, "main": main,
            "mtp": torch.stack(mtp) if mtp else torch.zeros(0)}


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


def make_optimizer(params: dict, ocfg: OptimConfig, foreach: bool | None = None) -> torch.optim.AdamW:
    """torch.optim.AdamW; no weight decay on RMSNorm weights and model.embed_tokens.weight
    (unless decay_norms_and_embeddings). With tied embeddings the shared matrix is the
    embedding, so it is not decayed."""
    decay, no_decay = [], []
    for name, p in params.items():
        skip = (is_norm(name) or name == "model.embed_tokens.weight") and not ocfg.decay_norms_and_embeddings
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=ocfg.lr, betas=(ocfg.beta1, ocfg.beta2), eps=ocfg.eps,
                             foreach=foreach)


def train_step(params: dict, cfg: ModelConfig, ocfg: OptimConfig, opt: torch.optim.Optimizer,
               window: torch.Tensor, fast: bool = False, bf16: bool = False) -> dict:
    """One step: forward, backward, clip to grad_clip, AdamW step, zero_grad.

    Returns the losses (floats) and the pre-clip global grad norm. To inspect gradients, call
    forward_backward() and optimizer_step() separately.
    """
    out = forward_backward(params, cfg, window, fast=fast, bf16=bf16)
    out["grad_norm"] = optimizer_step(params, ocfg, opt)
    return out


def forward_backward(params: dict, cfg: ModelConfig, window: torch.Tensor, fast: bool = False,
                     bf16: bool = False) -> dict:
    losses = model_loss(params, cfg, window, fast=fast, bf16=bf16)
    losses["total"].backward()
    return {"total": losses["total"].item(), "main": losses["main"].item(),
            "mtp": [v.item() for v in losses["mtp"]]}


def optimizer_step(params: dict, ocfg: OptimConfig, opt: torch.optim.Optimizer) -> float:
    """Clip (as clip_grad_norm_), step, zero_grad; returns the pre-clip global L2 norm."""
    plist = [p for p in params.values() if p.grad is not None]
    if ocfg.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(plist, ocfg.grad_clip).item()
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in plist])).item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm
