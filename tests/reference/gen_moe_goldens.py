#!/usr/bin/python3
"""Writes the MoE HDF5 goldens (tests/reference/goldens/moe_*.h5, model_moe.h5) from the
PyTorch reference in moe.py (docs/moe.md).

    /usr/bin/python3 tests/reference/gen_moe_goldens.py [--out DIR] [--check]

Same conventions as gen_goldens.py (its Writer is reused): a fixed seed per file, float32
data, int32 integers, no timestamps, byte-reproducible. See the MoE section of README.md.
--check runs self-checks first: pairwise-rank top-k vs a stable sort, the backward formulas of
docs/moe.md vs autograd, fp32 vs fp64 gradients (layer cases and a whole MoE model), the
permutation (fast) path vs the per-expert loop, the bias rule, the ties case, capacity by brute
force, and the dense reduction (n_routed_experts = 0 is model.py exactly). Generating
moe_qwen_shared_gate.h5 (softmax, top k renormalised, gated shared expert) also compares it with
qwen35.sparse_moe, the Qwen3.5 MoE block written from transformers' code. model_moe_bf16.h5 is
model_moe.h5's run with the emulated bf16 projections (model.proj: attention, dense FFN, every
expert, eh_proj; the router stays fp32); every run compares its losses with the fp32 twin's.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_goldens as gg  # noqa: E402
import model as ref  # noqa: E402
import moe  # noqa: E402
import qwen35  # noqa: E402

GENERATOR = "tests/reference/gen_moe_goldens.py"


class Writer(gg.Writer):
    """gen_goldens.Writer with this script's name in the `generator` attribute."""

    def __init__(self, path: str, attrs: dict):
        super().__init__(path, attrs, generator=GENERATOR)


def moe_attrs(cfg: moe.MoeConfig) -> dict:
    a = {f: getattr(cfg, f) for f in moe.MoeConfig.__dataclass_fields__}
    a["norm_topk_prob"] = int(bool(cfg.norm_topk_prob))
    if cfg.shared_expert_gate:
        a["shared_expert_gate"] = 1
    else:
        del a["shared_expert_gate"]  # the files of before the option existed are unchanged
    return a


# --------------------------------------------------------------------------------------------
# Layer goldens
# --------------------------------------------------------------------------------------------


def layer_params(cfg: moe.MoeConfig, d: int, g: torch.Generator, std=0.3, gate_std=0.5) -> dict:
    """Random weights in moe_param_shapes order; the bias is zeros (callers set it)."""
    params = {}
    for n, s in moe.moe_param_shapes(cfg, d).items():
        if moe.is_bias(n):
            params[n] = torch.zeros(s)
        else:
            params[n] = gg.randn(g, *s, std=gate_std if n == "gate.weight" else std)
    return params


def layer_run(cfg, x, params, dy, seq_len, fast=False):
    """Forward + backward of sum(y * dy) + seq_aux + aux + z; returns (out, grad_x, grads)."""
    x = x.clone().requires_grad_(True)
    p = {k: v.clone().requires_grad_(not moe.is_bias(k)) for k, v in params.items()}
    out = moe.moe_ffn(x, p, "", cfg, seq_len=seq_len, fast=fast)
    obj = (out["y"] * dy).sum() + out["seq_aux"] + out["aux"] + out["z"]
    obj.backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v))
             for k, v in p.items() if not moe.is_bias(k)}
    gx = x.grad if x.grad is not None else torch.zeros_like(x)
    return out, gx, grads


def gen_layer(out_dir, fname, seed, cfg: moe.MoeConfig, B=2, T=12, d=16, bias_fn=None,
              zero_gate=False, check=None):
    cfg.validate()
    g = torch.Generator().manual_seed(seed)
    N = B * T
    x = gg.randn(g, N, d)
    params = layer_params(cfg, d, g)
    if zero_gate:
        params["gate.weight"] = torch.zeros_like(params["gate.weight"])
    if bias_fn is not None:
        params[moe.BIAS_SUFFIX] = bias_fn(g, cfg.n_routed_experts).float()
    dy = gg.randn(g, N, d)
    o, gx, grads = layer_run(cfg, x, params, dy, T)
    bias_after = moe.update_bias(params[moe.BIAS_SUFFIX], o["counts"], cfg.bias_update_speed)
    if check is not None:
        check(cfg, x, params, o)

    attrs = dict(batch=B, seq_len=T, rows=N, hidden_size=d, seed=seed)
    attrs.update(moe_attrs(cfg))
    w = Writer(os.path.join(out_dir, fname), attrs)
    for k, v in params.items():
        w.put(f"params/{k}", v)
    w.put("inputs/x", x)
    w.put("inputs/dy", dy)
    w.put("outputs/y", o["y"])
    w.put("outputs/topk_idx", o["topk_idx"].int())
    w.put("outputs/gates", o["gates"])
    w.put("outputs/kept", o["kept"].int())
    w.put("outputs/counts", o["counts"].int())
    w.put("outputs/dropped", torch.tensor(o["dropped"], dtype=torch.int32))
    w.put("outputs/seq_aux_loss", o["seq_aux"])
    w.put("outputs/aux_loss", o["aux"])
    w.put("outputs/z_loss", o["z"])
    w.put("outputs/entropy", torch.tensor(o["entropy"]))
    w.put("outputs/bias_after", bias_after)
    w.put("grads/x", gx)
    for k, v in grads.items():
        w.put(f"grads/params/{k}", v)
    w.close()
    print(f"  {fname}: counts={o['counts'].tolist()} dropped={o['dropped']} "
          f"seq_aux={o['seq_aux'].item():.6g} aux={o['aux'].item():.6g} z={o['z'].item():.6g} "
          f"entropy={o['entropy']:.5f}")
    return o


def _unbiased_differs(cfg, x, params, o):
    s = moe.scores_of(x @ params["gate.weight"].t(), cfg.scoring_func)
    unb = moe.select_experts(s, torch.zeros(cfg.n_routed_experts), cfg)
    n = int((unb != o["topk_idx"]).any(-1).sum())
    assert n > 0, "bias did not change any selection"
    print(f"    bias changes the selection of {n}/{x.shape[0]} tokens")


def _unused(e):
    def check(cfg, x, params, o):
        assert o["counts"][e] == 0
    return check


def _one(e):
    def check(cfg, x, params, o):
        assert o["counts"][e] == x.shape[0] and o["counts"].sum() == x.shape[0]
    return check


def _ties(cfg, x, params, o):
    k = cfg.num_experts_per_tok
    assert (o["topk_idx"] == torch.arange(k)[None, :]).all(), "ties must go to the lowest indices"


def _dropped(cfg, x, params, o):
    assert o["dropped"] > 0


def _matches_qwen35(cfg, x, params, o):
    """The Qwen case against qwen35.sparse_moe (written from transformers' Qwen3.5 MoE block:
    softmax over all experts, top k renormalised, shared expert times sigmoid(x w_gate^T)), in
    float64 and float32, and the routing margins: the smallest gap between the probabilities
    whose order decides topk_idx (ranks 0..k, each token)."""
    qcfg = qwen35.Qwen35Config(hidden_size=x.shape[1], num_experts=cfg.n_routed_experts,
                               num_experts_per_tok=cfg.num_experts_per_tok,
                               moe_intermediate_size=cfg.moe_intermediate_size,
                               shared_expert_intermediate_size=cfg.moe_intermediate_size)
    qp = {k.replace("shared_experts.", "shared_expert."): v for k, v in params.items()}
    assert torch.equal(o["topk_idx"], moe.order_desc(torch.softmax(x @ params["gate.weight"].t(), -1))
                       [:, : cfg.num_experts_per_tok])
    with torch.no_grad():
        e32 = _rel(o["y"].detach(), qwen35.sparse_moe(x, qp, "", qcfg))
        e64 = _rel(moe.moe_ffn(x.double(), {k: v.double() for k, v in params.items()}, "", cfg,
                               seq_len=x.shape[0])["y"],
                   qwen35.sparse_moe(x.double(), {k: v.double() for k, v in qp.items()}, "", qcfg))
        p = torch.softmax(x @ params["gate.weight"].t(), -1).sort(-1, descending=True).values
        gap = (p[:, : cfg.num_experts_per_tok] - p[:, 1 : cfg.num_experts_per_tok + 1]).min()
        sg = torch.sigmoid(x @ params["shared_expert_gate.weight"].t())
    assert e32 < 1e-6 and e64 < 1e-12, (e32, e64)
    print(f"    vs qwen35.sparse_moe: fp32 {e32:.1e}, fp64 {e64:.1e}; smallest routing gap "
          f"{gap.item():.2e}; shared gate sigmoid in [{sg.min().item():.3f}, {sg.max().item():.3f}]")


def layer_cases():
    """(file, seed, MoeConfig, kwargs of gen_layer)."""
    coeffs = dict(seq_aux_loss_alpha=0.01, aux_loss_coeff=0.01, z_loss_coeff=0.001,
                  bias_update_speed=0.001)
    return [
        ("moe_sigmoid_grouped.h5", 4001,
         moe.MoeConfig(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=12,
                       n_shared_experts=1, routed_scaling_factor=2.5, scoring_func=moe.SIGMOID,
                       norm_topk_prob=True, n_group=4, topk_group=2, **coeffs),
         dict(bias_fn=lambda g, E: gg.randn(g, E, std=0.15), check=_unbiased_differs)),
        ("moe_softmax.h5", 4002,
         moe.MoeConfig(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=10,
                       n_shared_experts=0, routed_scaling_factor=1.0, scoring_func=moe.SOFTMAX,
                       norm_topk_prob=False, n_group=1, topk_group=1, **coeffs),
         dict(bias_fn=lambda g, E: gg.randn(g, E, std=0.05))),
        ("moe_unused_expert.h5", 4003,
         moe.MoeConfig(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=8,
                       n_shared_experts=1, routed_scaling_factor=1.0, scoring_func=moe.SIGMOID,
                       norm_topk_prob=True, **coeffs),
         dict(bias_fn=lambda g, E: torch.tensor([0.0, 0.0, 0.0, -10.0, 0.0, 0.0]), check=_unused(3))),
        ("moe_one_expert.h5", 4004,
         moe.MoeConfig(n_routed_experts=4, num_experts_per_tok=1, moe_intermediate_size=8,
                       n_shared_experts=0, routed_scaling_factor=1.5, scoring_func=moe.SIGMOID,
                       norm_topk_prob=False, **coeffs),
         dict(bias_fn=lambda g, E: torch.tensor([0.0, 0.0, 10.0, 0.0]), check=_one(2))),
        ("moe_k_equals_e.h5", 4005,
         moe.MoeConfig(n_routed_experts=4, num_experts_per_tok=4, moe_intermediate_size=8,
                       n_shared_experts=1, routed_scaling_factor=2.5, scoring_func=moe.SIGMOID,
                       norm_topk_prob=True, **coeffs),
         dict(bias_fn=lambda g, E: gg.randn(g, E, std=0.1))),
        ("moe_ties.h5", 4006,
         moe.MoeConfig(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8,
                       n_shared_experts=1, routed_scaling_factor=2.5, scoring_func=moe.SIGMOID,
                       norm_topk_prob=True, n_group=2, topk_group=1, **coeffs),
         dict(zero_gate=True, check=_ties)),
        ("moe_capacity.h5", 4007,
         moe.MoeConfig(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8,
                       n_shared_experts=1, routed_scaling_factor=2.5, scoring_func=moe.SIGMOID,
                       norm_topk_prob=True, capacity_factor=0.5, **coeffs),
         dict(bias_fn=lambda g, E: gg.randn(g, E, std=0.05), check=_dropped)),
        # Qwen3-Next / Qwen3.5's MoE block: softmax over all experts, top k renormalised, no
        # scaling, no groups, no bias, no balance losses, one shared expert gated by
        # sigmoid(x . shared_expert_gate.weight).
        ("moe_qwen_shared_gate.h5", 4008,
         moe.MoeConfig(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=12,
                       n_shared_experts=1, routed_scaling_factor=1.0, scoring_func=moe.SOFTMAX,
                       norm_topk_prob=True, n_group=1, topk_group=1, shared_expert_gate=True),
         dict(check=_matches_qwen35)),
    ]


# --------------------------------------------------------------------------------------------
# Whole-model golden
# --------------------------------------------------------------------------------------------


def model_moe_config() -> moe.MoeModelConfig:
    return moe.MoeModelConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, rope_theta=10000.0,
        rope_style=ref.ROTATE_HALF, rms_norm_eps=1e-5, tie_word_embeddings=False,
        num_nextn_predict_layers=1, mtp_loss_weight=0.3,
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
        first_k_dense_replace=1, routed_scaling_factor=2.5, scoring_func=moe.SIGMOID,
        norm_topk_prob=True, n_group=2, topk_group=1, bias_update_speed=0.01,
        seq_aux_loss_alpha=0.001, aux_loss_coeff=0.0, z_loss_coeff=0.0001, capacity_factor=0.0)


def gen_model_moe(out_dir, fname="model_moe.h5", seed=3001, B=2, T=16, steps=3, init_std=0.1,
                  norm_noise=0.1, bf16=False):
    """Writes the whole-model MoE golden (bf16: the emulated bf16 projections); returns the
    per-step results of forward_backward."""
    cfg = model_moe_config()
    cfg.moe.validate()
    ocfg = ref.OptimConfig(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0)
    g = torch.Generator().manual_seed(seed)
    params = moe.init_params(cfg, g, init_std=init_std, norm_noise=norm_noise)
    D = cfg.num_nextn_predict_layers
    tokens = torch.randint(0, cfg.vocab_size, (steps, B, T + 1 + D), generator=g)
    init = {k: v.detach().clone() for k, v in params.items()}
    bias_names = list(moe.biases(params))
    bias_hist = {n: [params[n].clone()] for n in bias_names}

    def after_step(r):
        moe.update_biases(params, cfg, r["counts"])
        for n in bias_names:
            bias_hist[n].append(params[n].clone())

    results, norms, grads = gg.train_steps(moe, params, cfg, ocfg, tokens, after_step, bf16=bf16)
    counts_hist = {n: [r["counts"][n[: -len(moe.BIAS_SUFFIX)]] for r in results]
                   for n in bias_names}
    aux = [r["aux"] for r in results]

    attrs = gg.model_attrs(cfg, ocfg, B, T, steps, seed, init_std, norm_noise, bf16=bf16)
    attrs["norm_topk_prob"] = int(bool(cfg.norm_topk_prob))
    losses = gg.step_losses(results, D)
    losses["aux"] = torch.tensor(aux)
    extra = {}
    for n in bias_names:
        layer = n[: -len(".mlp." + moe.BIAS_SUFFIX)]  # model.layers.{l}
        extra[f"bias/{n}"] = torch.stack(bias_hist[n])
        extra[f"counts/{layer}"] = torch.stack(counts_hist[n]).int()
    gg.write_model_golden(os.path.join(out_dir, fname), attrs, init, tokens, losses, grads, norms,
                          params, extra, writer=Writer)
    clipped = [n > ocfg.grad_clip for n in norms]
    print(f"  {fname}: total={['%.5f' % r['total'] for r in results]} "
          f"aux={['%.3g' % a for a in aux]} "
          f"grad_norm={['%.4f' % n for n in norms]} clip={ocfg.grad_clip} clipped={clipped}")
    for n in bias_names:
        print(f"    {n[:-len(moe.BIAS_SUFFIX)]} counts={[c.tolist() for c in counts_hist[n]]}")
    return results


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-30)).item()


def self_check():
    g = torch.Generator().manual_seed(11)
    # 1. Pairwise-rank order vs a stable sort of the negated key (ties: lower index first).
    for _ in range(20):
        v = torch.randint(0, 4, (7, 9), generator=g).float()
        v[0, 3] = float("-inf"); v[1, :] = float("-inf")
        assert torch.equal(moe.order_desc(v), torch.sort(-v, dim=-1, stable=True).indices)
    # 2. The backward formulas of docs/moe.md vs autograd (gates from chosen scores).
    s = torch.rand(5, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    c = 2.5
    gates = c * s / (s.sum(-1, keepdim=True) + 1e-20)
    dg = torch.randn(5, 3, generator=g, dtype=torch.float64)
    (ds,) = torch.autograd.grad((gates * dg).sum(), s)
    S = s.detach().sum(-1, keepdim=True) + 1e-20
    assert torch.allclose(ds, c * (dg / S - (dg * s.detach()).sum(-1, keepdim=True) / S ** 2))
    u = torch.randn(5, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    dsf = torch.randn(5, 6, generator=g, dtype=torch.float64)
    for fn in (moe.SIGMOID, moe.SOFTMAX):
        sc = moe.scores_of(u, fn)
        (du,) = torch.autograd.grad((sc * dsf).sum(), u)
        sd = sc.detach()
        want = dsf * sd * (1 - sd) if fn == moe.SIGMOID else sd * (dsf - (dsf * sd).sum(-1, keepdim=True))
        assert torch.allclose(du, want)
    # 3. The bias rule.
    b = torch.tensor([0.5, 0.0, -0.25, 1.0])
    nb = moe.update_bias(b, torch.tensor([5, 3, 4, 4]), 0.125)  # mean 4
    assert torch.equal(nb, torch.tensor([0.375, 0.125, -0.25, 1.0])), nb
    # 4. Per layer case: fp32 vs fp64 grads, fast vs reference path, capacity by brute force.
    worst_all = 0.0
    for fname, seed, cfg, kw in layer_cases():
        gl = torch.Generator().manual_seed(seed)
        B, T, d = 2, 12, 16
        N = B * T
        x = gg.randn(gl, N, d)
        params = layer_params(cfg, d, gl)
        if kw.get("zero_gate"):
            params["gate.weight"].zero_()
        if kw.get("bias_fn"):
            params[moe.BIAS_SUFFIX] = kw["bias_fn"](gl, cfg.n_routed_experts).float()
        dy = gg.randn(gl, N, d)
        o32, gx32, g32 = layer_run(cfg, x, params, dy, T)
        o64, gx64, g64 = layer_run(cfg, x.double(), {k: v.double() for k, v in params.items()},
                                   dy.double(), T)
        assert torch.equal(o32["topk_idx"], o64["topk_idx"]) and torch.equal(o32["kept"], o64["kept"])
        worst = max([_rel(gx32, gx64), _rel(o32["y"], o64["y"])] + [_rel(g32[k], g64[k]) for k in g32])
        worst_all = max(worst_all, worst)
        assert worst < 1e-4, (fname, worst)
        of, gxf, gf = layer_run(cfg, x, params, dy, T, fast=True)
        assert torch.equal(of["topk_idx"], o32["topk_idx"])
        assert _rel(of["y"], o32["y"]) < 1e-5 and _rel(gxf, gx32) < 1e-5
        assert all(_rel(gf[k], g32[k]) < 1e-5 or g32[k].abs().max() == 0 for k in g32)
        # Brute-force routing in Python for every token.
        sc = moe.scores_of(x @ params["gate.weight"].t(), cfg.scoring_func)
        bias = params[moe.BIAS_SUFFIX]
        E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
        for t in range(N):
            sel = (sc[t] + bias).tolist()  # the same fp32 sums
            if cfg.n_group > 1:
                gsz = E // cfg.n_group
                gscore = []
                for gi in range(cfg.n_group):
                    vals = sorted(sel[gi * gsz:(gi + 1) * gsz], reverse=True)
                    gscore.append(vals[0] + vals[1] if cfg.scoring_func == moe.SIGMOID else vals[0])
                best = sorted(range(cfg.n_group), key=lambda i: (-gscore[i], i))[: cfg.topk_group]
                sel = [v if e // gsz in best else float("-inf") for e, v in enumerate(sel)]
            want = sorted(range(E), key=lambda e: (-sel[e], e))[:k]
            assert o32["topk_idx"][t].tolist() == want, (fname, t)
        C = moe.capacity(cfg, N)
        for e in range(E):
            assign = [(t, j) for t in range(N) for j in range(k) if o32["topk_idx"][t, j] == e]
            assert o32["counts"][e] == len(assign)
            if C:
                ranked = sorted(assign, key=lambda a: (-sc[a[0], e].item(), a[0]))
                for r, (t, j) in enumerate(ranked):
                    assert o32["kept"][t, j] == (1 if r < C else 0)
        if C:
            assert o32["dropped"] == sum(max(0, c - C) for c in o32["counts"].tolist())
        else:
            assert o32["dropped"] == 0
        if fname == "moe_ties.h5":
            assert (o32["topk_idx"] == torch.tensor([0, 1])).all()
    print(f"  layer cases: fp32 vs fp64 worst relative error {worst_all:.2e}; fast path = loop; "
          f"routing and capacity match brute force")
    # 5. Dense reduction: n_routed_experts = 0 is model.py.
    dcfg = moe.MoeModelConfig(vocab_size=31, num_nextn_predict_layers=2, tie_word_embeddings=True)
    pd = moe.init_params(dcfg, torch.Generator().manual_seed(3), init_std=0.1, norm_noise=0.1)
    pr = ref.init_params(dcfg, torch.Generator().manual_seed(3), init_std=0.1, norm_noise=0.1)
    w = torch.randint(0, 31, (2, 14), generator=g)
    assert list(pd) == list(pr) and all(torch.equal(pd[k], pr[k]) for k in pd)
    assert moe.model_loss(pd, dcfg, w)["total"].item() == ref.model_loss(pr, dcfg, w)["total"].item()
    # 6. Whole MoE model fp32 vs fp64 gradients (random bias so routing is biased).
    cfg = model_moe_config()
    cfg.vocab_size = 31
    p32 = moe.init_params(cfg, torch.Generator().manual_seed(5), init_std=0.1, norm_noise=0.1)
    for n in moe.biases(p32):
        p32[n] = 0.1 * torch.randn(cfg.n_routed_experts, generator=g)
    p64 = {k: v.detach().double().requires_grad_(v.requires_grad) for k, v in p32.items()}
    w = torch.randint(0, 31, (2, 11 + 2), generator=g)
    r32 = moe.forward_backward(p32, cfg, w)
    r64 = moe.forward_backward(p64, cfg, w)
    for n in r32["counts"]:
        assert torch.equal(r32["counts"][n], r64["counts"][n])
    worst = max(_rel(p32[k].grad, p64[k].grad) for k in moe.trainable(p32))
    print(f"  fp32 vs fp64 MoE model grads: worst relative (to max) error {worst:.2e}; "
          f"aux fp32 {r32['aux']:.8g} fp64 {r64['aux']:.8g}")
    assert worst < 1e-4
    assert abs(r32["total"] - r64["total"]) < 1e-5 * abs(r64["total"])
    # Fast path of the whole model.
    p32f = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in p32.items()}
    rf = moe.forward_backward(p32f, cfg, w, fast=True)
    assert abs(rf["total"] - r32["total"]) < 1e-6 * abs(r32["total"])
    assert max(_rel(p32f[k].grad, p32[k].grad) for k in moe.trainable(p32)) < 1e-5
    # 7. The bf16 emulation (model.proj in every expert): fp32 vs fp64, fast path vs loop.
    b32 = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in p32.items()}
    b64 = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in p64.items()}
    b32f = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in p32.items()}
    q32 = moe.forward_backward(b32, cfg, w, bf16=True)
    q64 = moe.forward_backward(b64, cfg, w, bf16=True)
    qf = moe.forward_backward(b32f, cfg, w, fast=True, bf16=True)
    for n in q32["counts"]:
        assert torch.equal(q32["counts"][n], q64["counts"][n])
        assert torch.equal(q32["counts"][n], qf["counts"][n])
    worst = max(_rel(b32[k].grad, b64[k].grad) for k in moe.trainable(b32))
    worst_fast = max(_rel(b32f[k].grad, b32[k].grad) for k in moe.trainable(b32))
    # fp64 moves bf16 operands across rounding boundaries (steps of 2^-8..2^-7): loose.
    assert worst < 5e-2 and worst_fast < 1e-5, (worst, worst_fast)
    assert abs(qf["total"] - q32["total"]) < 1e-6 * abs(q32["total"])
    print(f"  bf16 emulation: fp32 vs fp64 MoE model grads {worst:.2e} (loss "
          f"{abs(q32['total'] - q64['total']) / abs(q64['total']):.1e}), fast path vs loop "
          f"{worst_fast:.1e}; bf16 vs fp32 loss {abs(q32['total'] - r32['total']) / abs(r32['total']):.1e}")
    print("  self-checks passed")


def main():
    out = gg.setup(self_check)
    names = []
    for fname, seed, cfg, kw in layer_cases():
        gen_layer(out, fname, seed, cfg, **kw)
        names.append(fname)
    r32 = gen_model_moe(out)
    # Its bf16 twin: same seed, so the same init and tokens; emulated bf16 projections.
    r16 = gen_model_moe(out, "model_moe_bf16.h5", bf16=True)
    gg.compare_bf16("model_moe_bf16.h5", r32, r16)
    names += ["model_moe.h5", "model_moe_bf16.h5"]
    gg.print_sizes(out, names)


if __name__ == "__main__":
    main()
