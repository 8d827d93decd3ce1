"""Independent PyTorch reference of the mixture-of-experts FFN defined in docs/moe.md, and of
the whole model of docs/model.md with MoE layers (model.py is reused unchanged; with
n_routed_experts = 0 everything here reduces to model.py exactly).

The attention can be swapped for DeepSeek's multi-head latent attention (mla.py): with
MoeModelConfig.mla set (an mla.MlaConfig) every layer, dense, MoE and MTP, has MLA's
self_attn.* parameters and sublayer in place of model.py's GQA; with mla None (the default)
the model is exactly the one above.

MoeConfig.shared_expert_gate (off by default) is Qwen's gated shared expert: the shared
experts' output times sigmoid(x . w) per token, w = shared_expert_gate.weight [1, d]; off, the
FFN, its parameters and the golden attributes are those of before the option.

fp32, plain tensors, autograd for gradients; bf16=True (model.py's emulated bf16 mixed
precision) runs every routed and shared expert's gate/up/down_proj through model.proj, while
the router (gate.weight), the shared expert gate and all routing and balancing math stay fp32.
Routing (groups, top-k, capacity) is computed
without gradient and written out explicitly: every "top" selection goes through order_desc(),
a pairwise rank that breaks ties by the lower index, so nothing depends on torch.topk's
(unspecified) tie order.

The reference FFN (moe_ffn(..., fast=False)) loops over the experts and gathers each expert's
kept tokens with index_select; the fast path (fast=True, used by bench/torch_reference.py)
permutes the kept assignments by expert (stable in token order), runs one SwiGLU per expert on
its contiguous slice and scatters back with index_add: the same function, cheaper.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, fields, replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mla as mla_ref  # noqa: E402
import model as ref  # noqa: E402

SIGMOID = "sigmoid"
SOFTMAX = "softmax"
BIAS_SUFFIX = "gate.e_score_correction_bias"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class MoeConfig:
    """The MoE FFN of one layer (names as configs/moetron.proto `MoeConfig`)."""
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 16
    n_shared_experts: int = 0
    routed_scaling_factor: float = 1.0
    scoring_func: str = SIGMOID
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    capacity_factor: float = 0.0
    seq_aux_loss_alpha: float = 0.0
    aux_loss_coeff: float = 0.0
    z_loss_coeff: float = 0.0
    bias_update_speed: float = 0.0
    # Qwen's gated shared expert: the shared experts' output times sigmoid(x . w) per token,
    # w = `shared_expert_gate.weight` [1, d] (proto `moe.shared_expert_gate`). Off by default;
    # the golden attributes carry it only when set.
    shared_expert_gate: bool = False

    def validate(self):
        E, k = self.n_routed_experts, self.num_experts_per_tok
        assert E > 0 and 1 <= k <= E
        assert self.scoring_func in (SIGMOID, SOFTMAX), self.scoring_func
        assert self.n_group >= 1 and E % self.n_group == 0
        if self.n_group > 1:
            assert 1 <= self.topk_group <= self.n_group
            assert k <= self.topk_group * (E // self.n_group), "k larger than the eligible experts"
        assert self.capacity_factor >= 0
        assert not self.shared_expert_gate or self.n_shared_experts > 0, "a gate needs a shared expert"


@dataclass
class MoeModelConfig(ref.ModelConfig):
    """model.ModelConfig plus the flat MoE fields (configs/moetron.proto `model.moe`)."""
    n_routed_experts: int = 0  # 0: dense model, identical to model.py
    num_experts_per_tok: int = 1
    moe_intermediate_size: int = 256
    n_shared_experts: int = 0
    first_k_dense_replace: int = 1
    routed_scaling_factor: float = 1.0
    scoring_func: str = SIGMOID
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    bias_update_speed: float = 0.0
    seq_aux_loss_alpha: float = 0.0
    aux_loss_coeff: float = 0.0
    z_loss_coeff: float = 0.0
    capacity_factor: float = 0.0
    shared_expert_gate: bool = False  # MoeConfig's; to_dict() leaves it out when off
    # The attention of every layer: None = model.py's GQA attention; an mla.MlaConfig = MLA
    # (its hidden_size and heads must be this config's; the block norms keep rms_norm_eps,
    # MLA's latent norms use the MlaConfig's).
    mla: mla_ref.MlaConfig | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["mla"] is None:
            del d["mla"]  # GQA: the fields (and golden attributes) of before the swap existed
        if not d["shared_expert_gate"]:
            del d["shared_expert_gate"]  # likewise: model_moe.h5's attributes unchanged
        return d

    @property
    def moe(self) -> MoeConfig:
        return MoeConfig(**{f.name: getattr(self, f.name) for f in fields(MoeConfig)})

    def is_moe_layer(self, l: int) -> bool:
        """Main layers l >= first_k_dense_replace and every MTP block (l >= L)."""
        return self.n_routed_experts > 0 and (l >= self.first_k_dense_replace or l >= self.num_hidden_layers)


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def order_desc(score: torch.Tensor) -> torch.Tensor:
    """Permutation sorting the last dim by descending value, ties to the lower index.

    Explicit pairwise rank: rank_i = #{j : s_j > s_i} + #{j < i : s_j == s_i}; position r of
    the result holds the element of rank r. -inf entries tie with each other like any value.
    """
    n = score.shape[-1]
    idx = torch.arange(n, device=score.device)
    si = score.unsqueeze(-1)  # [..., i, 1]
    sj = score.unsqueeze(-2)  # [..., 1, j]
    before = (sj > si) | ((sj == si) & (idx[None, :] < idx[:, None]))  # j precedes i
    rank = before.sum(-1)
    order = torch.empty_like(rank)
    order.scatter_(-1, rank, idx.expand_as(rank).contiguous())
    return order


def scores_of(u: torch.Tensor, scoring_func: str) -> torch.Tensor:
    if scoring_func == SIGMOID:
        return torch.sigmoid(u)
    if scoring_func == SOFTMAX:
        return torch.softmax(u, dim=-1)
    raise ValueError(scoring_func)


@torch.no_grad()
def select_experts(s: torch.Tensor, bias: torch.Tensor, cfg: MoeConfig) -> torch.Tensor:
    """Steps 3-5 of docs/moe.md: selection score s + bias, group limit, top-k.
    s [N, E] (unbiased scores) -> topk_idx [N, k] (int64), in selection order."""
    N, E = s.shape
    sel = s + bias[None, :]
    if cfg.n_group > 1:
        gs = E // cfg.n_group
        grouped = sel.view(N, cfg.n_group, gs)
        if cfg.scoring_func == SIGMOID:  # sum of the group's top-2 selection scores
            top = order_desc(grouped)[..., : min(2, gs)]
            gscore = grouped.gather(-1, top).sum(-1)
        else:  # max
            gscore = grouped.max(-1).values
        keep = order_desc(gscore)[:, : cfg.topk_group]  # [N, topk_group]
        gmask = torch.zeros(N, cfg.n_group, dtype=torch.bool, device=s.device)
        gmask.scatter_(1, keep, True)
        sel = sel.masked_fill(~gmask.repeat_interleave(gs, dim=1), float("-inf"))
    return order_desc(sel)[:, : cfg.num_experts_per_tok]


def capacity(cfg: MoeConfig, N: int) -> int:
    """C = ceil(capacity_factor * N * k / E), computed in double; 0 means dropless."""
    if cfg.capacity_factor <= 0:
        return 0
    return int(math.ceil(cfg.capacity_factor * N * cfg.num_experts_per_tok / cfg.n_routed_experts))


@torch.no_grad()
def capacity_keep(s: torch.Tensor, topk_idx: torch.Tensor, cfg: MoeConfig) -> torch.Tensor:
    """kept [N, k] int64 (1 kept, 0 dropped): each expert keeps its C assignments with the
    highest unbiased score s[t, e], ties to the lower token index."""
    N, k = topk_idx.shape
    kept = torch.ones(N, k, dtype=torch.int64, device=s.device)
    C = capacity(cfg, N)
    if C == 0:
        return kept
    for e in range(cfg.n_routed_experts):
        t, j = (topk_idx == e).nonzero(as_tuple=True)  # t ascending: a token picks e at most once
        if t.numel() > C:
            drop = order_desc(s[t, e])[C:]
            kept[t[drop], j[drop]] = 0
    return kept


# --------------------------------------------------------------------------------------------
# The MoE FFN
# --------------------------------------------------------------------------------------------


def moe_param_shapes(cfg: MoeConfig, d: int) -> dict:
    """Local names (under `...mlp.`) -> shapes, in init order."""
    E, I = cfg.n_routed_experts, cfg.moe_intermediate_size
    shapes = {"gate.weight": (E, d), BIAS_SUFFIX: (E,)}
    for e in range(E):
        shapes[f"experts.{e}.gate_proj.weight"] = (I, d)
        shapes[f"experts.{e}.up_proj.weight"] = (I, d)
        shapes[f"experts.{e}.down_proj.weight"] = (d, I)
    if cfg.n_shared_experts > 0:
        Is = cfg.n_shared_experts * I
        shapes["shared_experts.gate_proj.weight"] = (Is, d)
        shapes["shared_experts.up_proj.weight"] = (Is, d)
        shapes["shared_experts.down_proj.weight"] = (d, Is)
        if cfg.shared_expert_gate:
            shapes["shared_expert_gate.weight"] = (1, d)
    return shapes


def is_bias(name: str) -> bool:
    return name.endswith(BIAS_SUFFIX)


def moe_ffn(x: torch.Tensor, p: dict, prefix: str, cfg: MoeConfig, seq_len: int,
            fast: bool = False, bf16: bool = False) -> dict:
    """x [N, d] (N = B * seq_len rows, sequence b = rows b*T .. b*T+T-1) -> dict with
    y [N, d]; topk_idx [N, k]; gates [N, k] (normalised and scaled, before dropping);
    kept [N, k]; counts [E] (after top-k, before capacity); dropped (int); the weighted losses
    seq_aux, aux, z (0-dim tensors, differentiable); entropy (float)."""
    N, d = x.shape
    E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    W = p[prefix + "gate.weight"]
    bias = p[prefix + BIAS_SUFFIX].detach()

    u = x @ W.t()  # [N, E] router logits
    s = scores_of(u, cfg.scoring_func)
    topk_idx = select_experts(s.detach(), bias, cfg)
    g = s.gather(1, topk_idx)
    if cfg.norm_topk_prob:
        g = g / (g.sum(dim=-1, keepdim=True) + 1e-20)
    gates = g * cfg.routed_scaling_factor
    counts = torch.bincount(topk_idx.reshape(-1), minlength=E)
    kept = capacity_keep(s.detach(), topk_idx, cfg)

    # Experts.
    y = torch.zeros_like(x)
    if fast:
        # Permute: kept assignments sorted by expert, stable in token order.
        tok = torch.arange(N, device=x.device).repeat_interleave(k)
        keep = kept.reshape(-1).bool()
        flat_e, tok, gate = topk_idx.reshape(-1)[keep], tok[keep], gates.reshape(-1)[keep]
        flat_e, perm = torch.sort(flat_e, stable=True)
        tok, gate = tok[perm], gate[perm]
        xs = x.index_select(0, tok)
        outs, off = [], 0
        for e, c in enumerate(torch.bincount(flat_e, minlength=E).tolist()):
            if c:
                outs.append(ref.swiglu(xs[off : off + c], p, f"{prefix}experts.{e}.", bf16=bf16))
                off += c
        if outs:  # .to: under torch.autocast the experts' outputs are bf16, y is x's fp32
            y = y.index_add(0, tok, (torch.cat(outs) * gate[:, None]).to(y.dtype))
    else:
        for e in range(E):
            t, j = ((topk_idx == e) & kept.bool()).nonzero(as_tuple=True)
            if t.numel() == 0:
                continue
            out = ref.swiglu(x.index_select(0, t), p, f"{prefix}experts.{e}.", bf16=bf16)
            y = y.index_add(0, t, (out * gates[t, j][:, None]).to(y.dtype))
    if cfg.n_shared_experts > 0:
        shared = ref.swiglu(x, p, prefix + "shared_experts.", bf16=bf16)
        if cfg.shared_expert_gate:  # Qwen: times sigmoid(x . w) per token, w [1, d]
            shared = torch.sigmoid(x @ p[prefix + "shared_expert_gate.weight"].t()) * shared
        y = shared + y

    # Auxiliary losses (docs/moe.md). p = sum-normalised scores (= s for softmax).
    pn = s if cfg.scoring_func == SOFTMAX else s / s.sum(dim=-1, keepdim=True)
    zero = x.new_zeros(())
    if cfg.seq_aux_loss_alpha != 0:
        T = seq_len
        B = N // T
        assert B * T == N
        utop = order_desc(s.detach())[:, :k]  # unbiased top-k: no bias, no groups
        hit = torch.zeros(N, E, dtype=x.dtype, device=x.device).scatter_(1, utop, 1.0)
        f = hit.view(B, T, E).sum(1) * (E / (k * T))
        P = pn.view(B, T, E).mean(1)
        seq_aux = cfg.seq_aux_loss_alpha * (f * P).sum(-1).mean()
    else:
        seq_aux = zero
    if cfg.aux_loss_coeff != 0:
        f = counts.to(x.dtype) / (N * k)
        aux = cfg.aux_loss_coeff * E * (f * pn.mean(0)).sum()
    else:
        aux = zero
    if cfg.z_loss_coeff != 0:
        z = cfg.z_loss_coeff * torch.logsumexp(u, dim=-1).pow(2).mean()
    else:
        z = zero
    with torch.no_grad():
        entropy = -torch.xlogy(pn, pn).sum(-1).mean().item()

    return {"y": y, "topk_idx": topk_idx, "gates": gates, "kept": kept, "counts": counts,
            "dropped": int((kept == 0).sum().item()), "seq_aux": seq_aux, "aux": aux, "z": z,
            "entropy": entropy}


def update_bias(bias: torch.Tensor, counts: torch.Tensor, speed: float) -> torch.Tensor:
    """Aux-loss-free rule: bias_i += speed * sign(mean(c) - c_i), sign(0) = 0, in float32
    (speed rounded to float32 first, as the proto's float)."""
    c = counts.to(torch.float64)
    sign = torch.sign(c.mean() - c).to(torch.float32)
    return (bias.float() + torch.tensor(speed, dtype=torch.float32) * sign).to(bias.dtype)


def max_violation(counts: torch.Tensor) -> float:
    c = counts.double()
    return ((c.max() - c.mean()) / c.mean()).item()


# --------------------------------------------------------------------------------------------
# Whole model with MoE layers
# --------------------------------------------------------------------------------------------


def _layer_of(name: str) -> int:
    return int(name.split(".")[2])


def param_shapes(cfg: MoeModelConfig) -> dict:
    """model.param_shapes() with each MoE layer's dense mlp.* replaced (in place) by the MoE
    names; includes the (non-trainable) e_score_correction_bias. With cfg.mla, each layer's
    self_attn.{q,k,v,o}_proj are replaced (in place) by mla.param_shapes' names."""
    if cfg.mla is not None:
        assert cfg.mla.hidden_size == cfg.hidden_size and cfg.mla.heads == cfg.num_attention_heads
        # model.py's names and order, from a config whose (discarded) GQA shapes always exist.
        base = replace(cfg, mla=None, num_attention_heads=1, num_key_value_heads=1)
        shapes = {}
        for name, s in param_shapes(base).items():
            if ".self_attn." in name:
                if name.endswith("self_attn.q_proj.weight"):
                    pre = name[: -len("q_proj.weight")]
                    for n, ms in mla_ref.param_shapes(cfg.mla).items():
                        shapes[pre + n] = ms
                continue  # k_proj / v_proj / o_proj
            shapes[name] = s
        return shapes
    shapes = {}
    for name, s in ref.param_shapes(cfg).items():
        if name.startswith("model.layers.") and ".mlp." in name and cfg.is_moe_layer(_layer_of(name)):
            if name.endswith("mlp.gate_proj.weight"):
                pre = name[: -len("gate_proj.weight")]
                for n, ms in moe_param_shapes(cfg.moe, cfg.hidden_size).items():
                    shapes[pre + n] = ms
            continue  # up_proj / down_proj of a MoE layer
        shapes[name] = s
    return shapes


def init_params(cfg: MoeModelConfig, generator: torch.Generator, init_std: float = 0.02,
                norm_noise: float = 0.0) -> dict:
    """As model.init_params (same draw order); the bias is zeros (no draw, requires_grad False)."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        if is_bias(name):
            params[name] = torch.zeros(shape)
            continue
        if ref.is_norm(name):
            t = torch.ones(shape) + norm_noise * torch.randn(shape, generator=generator)
        else:
            t = init_std * torch.randn(shape, generator=generator)
        params[name] = t.float().requires_grad_(True)
    return params


def trainable(params: dict) -> dict:
    return {k: v for k, v in params.items() if not is_bias(k)}


def biases(params: dict) -> dict:
    return {k: v for k, v in params.items() if is_bias(k)}


def attention(a: torch.Tensor, p: dict, prefix: str, cfg: MoeModelConfig,
              fast: bool = False, bf16: bool = False) -> torch.Tensor:
    """The attention sublayer (no norm, no residual) of cfg: model.attention, or mla.mla when
    cfg.mla is set; fast=True: PyTorch's fused causal attention in either. bf16 (emulated
    bf16 projections) is for the GQA attention only."""
    if cfg.mla is not None:
        assert not bf16, "no bf16 emulation of MLA"
        return mla_ref.mla(a, p, prefix, cfg.mla, fast=fast)
    return ref.attention(a, p, prefix, cfg.num_attention_heads, cfg.kv_heads, cfg.rope_theta,
                         cfg.rope_style, fast=fast, bf16=bf16)


def block(x: torch.Tensor, p: dict, prefix: str, cfg: MoeModelConfig, layer: int, stats: dict,
          fast: bool = False, bf16: bool = False) -> torch.Tensor:
    """model.block with the MoE FFN on MoE layers and cfg's attention (GQA or MLA);
    stats[prefix + "mlp."] gets moe_ffn's dict."""
    if not cfg.is_moe_layer(layer):
        if cfg.mla is None:
            return ref.block(x, p, prefix, cfg, fast=fast, bf16=bf16)
        a = ref.rms_norm(x, p[prefix + "input_layernorm.weight"], cfg.rms_norm_eps)
        h = x + attention(a, p, prefix + "self_attn.", cfg, fast=fast, bf16=bf16)
        m = ref.rms_norm(h, p[prefix + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        return h + ref.swiglu(m, p, prefix + "mlp.", bf16=bf16)
    a = ref.rms_norm(x, p[prefix + "input_layernorm.weight"], cfg.rms_norm_eps)
    h = x + attention(a, p, prefix + "self_attn.", cfg, fast=fast, bf16=bf16)
    m = ref.rms_norm(h, p[prefix + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
    B, T, d = m.shape
    out = moe_ffn(m.reshape(B * T, d), p, prefix + "mlp.", cfg.moe, seq_len=T, fast=fast, bf16=bf16)
    stats[prefix + "mlp."] = out
    return h + out["y"].view(B, T, d)


def model_loss(params: dict, cfg: MoeModelConfig, window: torch.Tensor, fast: bool = False,
               bf16: bool = False) -> dict:
    """window [B, T+1+D] -> {"total", "main", "mtp" [D], "aux" (sum of every MoE layer's weighted
    seq_aux + aux + z), "moe": {layer prefix "model.layers.l.mlp.": moe_ffn dict}}.
    total = main + (lambda/D) sum_k CE_k + aux. bf16: model.model_loss's emulated bf16
    projections, the experts' included (the router and the head stay fp32)."""
    D, L = cfg.num_nextn_predict_layers, cfg.num_hidden_layers
    lam = cfg.mtp_loss_weight
    window = window.long()
    T = window.shape[1] - 1 - D
    embed = params["model.embed_tokens.weight"]
    W = ref.head_weight(params, cfg)
    stats = {}

    x = embed[window[:, 0:T]]
    for l in range(L):
        x = block(x, params, f"model.layers.{l}.", cfg, l, stats, fast=fast, bf16=bf16)
    h = ref.rms_norm(x, params["model.norm.weight"], cfg.rms_norm_eps)
    main = ref.cross_entropy(h, W, window[:, 1 : T + 1])

    mtp = []
    for k in range(1, D + 1):
        pre = f"model.layers.{L + k - 1}."
        e = ref.rms_norm(embed[window[:, k : k + T]], params[pre + "enorm.weight"], cfg.rms_norm_eps)
        hn = ref.rms_norm(h, params[pre + "hnorm.weight"], cfg.rms_norm_eps)
        xk = ref.proj(torch.cat([e, hn], dim=-1), params[pre + "eh_proj.weight"], bf16)
        # h_k = shared_head.norm(block output): the head's input and the next module's h.
        h = ref.rms_norm(block(xk, params, pre, cfg, L + k - 1, stats, fast=fast, bf16=bf16),
                         params[pre + "shared_head.norm.weight"], cfg.rms_norm_eps)
        mtp.append(ref.cross_entropy(h, W, window[:, k + 1 : k + 1 + T]))

    total = main
    if D > 0:
        total = main + (lam / D) * torch.stack(mtp).sum()
    aux = main.new_zeros(())
    for st in stats.values():
        aux = aux + st["seq_aux"] + st["aux"] + st["z"]
    if stats:
        total = total + aux
    return {"total": total, "main": main, "mtp": torch.stack(mtp) if mtp else torch.zeros(0),
            "aux": aux, "moe": stats}


def make_optimizer(params: dict, ocfg: ref.OptimConfig, foreach: bool | None = None):
    """model.make_optimizer over the trainable params: gate / expert / shared weights are
    matrices (decayed); the e_score_correction_bias is not in the optimizer at all."""
    return ref.make_optimizer(trainable(params), ocfg, foreach=foreach)


def forward_backward(params: dict, cfg: MoeModelConfig, window: torch.Tensor, fast: bool = False,
                     bf16: bool = False) -> dict:
    losses = model_loss(params, cfg, window, fast=fast, bf16=bf16)
    losses["total"].backward()
    # Experts that got no token have no autograd path: their gradient is zero (as a dense
    # gradient buffer), so AdamW still decays them and advances their moments.
    for v in trainable(params).values():
        if v.grad is None:
            v.grad = torch.zeros_like(v)
    return {"total": losses["total"].item(), "main": losses["main"].item(),
            "mtp": [v.item() for v in losses["mtp"]], "aux": losses["aux"].item(),
            "counts": {k: st["counts"].clone() for k, st in losses["moe"].items()},
            "moe": losses["moe"]}


def optimizer_step(params: dict, ocfg: ref.OptimConfig, opt) -> float:
    """Clip + AdamW over the trainable params (pre-clip global norm returned)."""
    return ref.optimizer_step(trainable(params), ocfg, opt)


@torch.no_grad()
def update_biases(params: dict, cfg: MoeModelConfig, counts: dict):
    """After the optimizer step: each MoE layer's bias moves by the step's counts."""
    if cfg.bias_update_speed == 0:
        return
    for pre, c in counts.items():
        name = pre + BIAS_SUFFIX
        params[name].copy_(update_bias(params[name], c, cfg.bias_update_speed))


def train_step(params: dict, cfg: MoeModelConfig, ocfg: ref.OptimConfig, opt, window: torch.Tensor,
               fast: bool = False, bf16: bool = False) -> dict:
    out = forward_backward(params, cfg, window, fast=fast, bf16=bf16)
    out["grad_norm"] = optimizer_step(params, ocfg, opt)
    update_biases(params, cfg, out["counts"])
    return out
