#!/usr/bin/python3
"""Writes the HDF5 goldens in tests/reference/goldens/ from the PyTorch reference (model.py).

    /usr/bin/python3 tests/reference/gen_goldens.py [--out DIR] [--check]

Every file has its own torch.Generator with a fixed seed, so the output does not depend on the
order of generation; all float data is float32, tokens/targets int32. See README.md beside
this file for the layout. --check also runs self-consistency checks of the reference
(explicit vs fused attention, RoPE vs complex rotation, fp32 vs fp64 gradients, AdamW by hand,
the bf16 emulation's rounding and GEMM formulas). model_mtp_bf16.h5 is model_mtp.h5's run with
the emulated bf16 projections (model.proj); every run compares its losses with the fp32 twin's.
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------------
# Writing helpers
# --------------------------------------------------------------------------------------------


def _np(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype in (torch.int64, torch.int32):
            return t.numpy().astype(np.int32)
        return t.numpy().astype(np.float32)
    return np.asarray(t, dtype=np.float32)


def _attr(v):
    if isinstance(v, bool):
        return np.int64(int(v))  # no HDF5 enum bools: readers take numbers
    if isinstance(v, int):
        return np.int64(v)
    if isinstance(v, float):
        return np.float64(v)
    return str(v)


class Writer:
    def __init__(self, path: str, attrs: dict, generator: str = "tests/reference/gen_goldens.py"):
        self.path = path
        # HDF5 1.10 format (readable by libhdf5 >= 1.10): compact groups, single-chunk index.
        # No object timestamps anywhere, so the bytes are reproducible.
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        fcpl.set_obj_track_times(False)
        self.f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))
        attrs = dict(attrs)
        attrs["torch_version"] = torch.__version__
        attrs["generator"] = generator
        for k, v in attrs.items():
            self.f.attrs[k] = _attr(v)

    def group(self, name: str):
        """Creates the groups along name without timestamps."""
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            g = "/".join(parts[: i + 1])
            if g not in self.f:
                gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
                gcpl.set_obj_track_times(False)
                h5py.h5g.create(self.f.id, g.encode(), gcpl=gcpl)

    def put(self, name: str, value):
        self.group(name)
        data = _np(value)
        if data.nbytes >= 4096:  # one chunk, byte-shuffled + deflate: ~14% smaller
            self.f.create_dataset(name, data=data, chunks=data.shape, shuffle=True,
                                  compression="gzip", compression_opts=9, track_times=False)
        else:
            self.f.create_dataset(name, data=data, track_times=False)

    def close(self):
        self.f.close()


def randn(g, *shape, std=1.0):
    return std * torch.randn(*shape, generator=g)


def layer_grads(fn, inputs: dict, params: dict, g):
    """Runs y = fn(inputs, params), backward with a random dy; returns y, dy, grads."""
    inputs = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    y = fn(inputs, params)
    dy = randn(g, *y.shape)
    (y * dy).sum().backward()
    return y, dy, {k: v.grad for k, v in inputs.items()}, {k: v.grad for k, v in params.items()}


def write_layer(path, attrs, fn, inputs, params, g):
    y, dy, gin, gpar = layer_grads(fn, inputs, params, g)
    w = Writer(path, attrs)
    for k, v in params.items():
        w.put(f"params/{k}", v)
    for k, v in inputs.items():
        w.put(f"inputs/{k}", v)
    w.put("inputs/dy", dy)
    w.put("outputs/y", y)
    for k, v in gin.items():
        w.put(f"grads/{k}", v)
    for k, v in gpar.items():
        w.put(f"grads/params/{k}", v)
    w.close()


# --------------------------------------------------------------------------------------------
# Layer goldens
# --------------------------------------------------------------------------------------------


def gen_rmsnorm(out):
    g = torch.Generator().manual_seed(1001)
    N, d, eps = 23, 40, 1e-5
    x = randn(g, N, d, std=2.0)
    w = 1.0 + randn(g, d, std=0.2)
    write_layer(os.path.join(out, "rmsnorm.h5"), dict(eps=eps, rows=N, hidden_size=d),
                lambda i, p: ref.rms_norm(i["x"], p["weight"], eps), {"x": x}, {"weight": w}, g)


def gen_rope(out, style, seed):
    g = torch.Generator().manual_seed(seed)
    B, T, H, hd, theta = 2, 19, 2, 16, 10000.0
    x = randn(g, B, T, H, hd)

    def fn(i, p):
        cos, sin = ref.rope_cos_sin(T, hd, theta)
        return ref.apply_rope(i["x"], cos, sin, style)

    write_layer(os.path.join(out, f"rope_{style}.h5"),
                dict(rope_theta=theta, rope_style=style, batch=B, seq_len=T, heads=H, head_dim=hd),
                fn, {"x": x}, {}, g)


def gen_attention(out, name, seed, kv, style):
    g = torch.Generator().manual_seed(seed)
    B, T, d, H, theta = 2, 33, 32, 4, 10000.0
    hd = d // H
    x = randn(g, B, T, d)
    params = {
        "q_proj.weight": randn(g, H * hd, d, std=0.3),
        "k_proj.weight": randn(g, kv * hd, d, std=0.3),
        "v_proj.weight": randn(g, kv * hd, d, std=0.3),
        "o_proj.weight": randn(g, d, H * hd, std=0.3),
    }
    write_layer(os.path.join(out, f"{name}.h5"),
                dict(batch=B, seq_len=T, hidden_size=d, heads=H, kv_heads=kv, head_dim=hd,
                     rope_theta=theta, rope_style=style),
                lambda i, p: ref.attention(i["x"], p, "", H, kv, theta, style), {"x": x}, params, g)


def gen_attention_core_long(out):
    g = torch.Generator().manual_seed(1201)
    B, T, H, KV, hd = 1, 150, 2, 1, 16
    inputs = {"q": randn(g, B, T, H, hd, std=1.5), "k": randn(g, B, T, KV, hd, std=1.5),
              "v": randn(g, B, T, KV, hd)}
    write_layer(os.path.join(out, "attention_core_long.h5"),
                dict(batch=B, seq_len=T, heads=H, kv_heads=KV, head_dim=hd,
                     scale=1.0 / float(np.sqrt(hd))),
                lambda i, p: ref.attention_core(i["q"], i["k"], i["v"]), inputs, {}, g)


def gen_swiglu(out):
    g = torch.Generator().manual_seed(1301)
    N, d, I = 29, 32, 40
    x = randn(g, N, d)
    params = {"gate_proj.weight": randn(g, I, d, std=0.3), "up_proj.weight": randn(g, I, d, std=0.3),
              "down_proj.weight": randn(g, d, I, std=0.3)}
    write_layer(os.path.join(out, "swiglu.h5"), dict(rows=N, hidden_size=d, intermediate_size=I),
                lambda i, p: ref.swiglu(i["x"], p, ""), {"x": x}, params, g)


def gen_block(out):
    g = torch.Generator().manual_seed(1401)
    cfg = ref.ModelConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, rope_theta=10000.0, rope_style=ref.ROTATE_HALF,
                          rms_norm_eps=1e-5)
    B, T = 2, 17
    x = randn(g, B, T, cfg.hidden_size)
    params = {}
    for n, s in ref.block_param_shapes(cfg).items():
        params[n] = (1.0 + randn(g, *s, std=0.2)) if ref.is_norm(n) else randn(g, *s, std=0.2)
    write_layer(os.path.join(out, "block.h5"),
                dict(batch=B, seq_len=T, hidden_size=cfg.hidden_size, heads=cfg.num_attention_heads,
                     kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                     intermediate_size=cfg.intermediate_size, rope_theta=cfg.rope_theta,
                     rope_style=cfg.rope_style, rms_norm_eps=cfg.rms_norm_eps),
                lambda i, p: ref.block(i["x"], p, "", cfg), {"x": x}, params, g)


def gen_head_ce(out):
    g = torch.Generator().manual_seed(1501)
    N, d, V = 71, 16, 211
    h = randn(g, N, d).requires_grad_(True)
    W = randn(g, V, d, std=0.3).requires_grad_(True)
    targets = torch.randint(0, V, (N,), generator=g)
    logits = h @ W.t()
    row = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    loss = row.mean()
    loss.backward()
    w = Writer(os.path.join(out, "head_ce.h5"), dict(rows=N, hidden_size=d, vocab_size=V))
    w.put("inputs/h", h)
    w.put("inputs/targets", targets.int())
    w.put("params/weight", W)
    w.put("outputs/loss", loss)  # scalar dataset
    w.put("outputs/row_loss", row)  # per-row CE, for debugging
    w.put("grads/h", h.grad)
    w.put("grads/params/weight", W.grad)
    w.close()


# --------------------------------------------------------------------------------------------
# Whole-model goldens: 3 AdamW steps
# --------------------------------------------------------------------------------------------


def train_steps(lib, params: dict, cfg, ocfg: ref.OptimConfig, tokens, after_step=None,
                bf16=False):
    """The loop of a whole-model golden, for lib = model or moe: per window tokens[s],
    lib.forward_backward (bf16: emulated bf16 projections), then lib.optimizer_step (AdamW with
    clipping), then after_step(result) if given. Returns the per-step results of
    forward_backward, the pre-clip grad norms and each step's gradients before clipping (of
    every parameter that has one)."""
    opt = lib.make_optimizer(params, ocfg)
    results, norms, grads = [], [], []
    for s in range(len(tokens)):
        r = lib.forward_backward(params, cfg, tokens[s], bf16=bf16)
        grads.append({k: v.grad.detach().clone() for k, v in params.items() if v.grad is not None})
        norms.append(lib.optimizer_step(params, ocfg, opt))
        if after_step is not None:
            after_step(r)
        results.append(r)
    return results, norms, grads


def step_losses(results: list, D: int) -> dict:
    """/losses/total and /losses/main [steps], /losses/mtp [steps, D] from train_steps results."""
    return {"total": torch.tensor([r["total"] for r in results]),
            "main": torch.tensor([r["main"] for r in results]),
            "mtp": torch.tensor([r["mtp"] for r in results]).reshape(len(results), D)}


def model_attrs(cfg: ref.ModelConfig, ocfg: ref.OptimConfig, B, T, steps, seed, init_std,
                norm_noise, bf16=False) -> dict:
    """Root attributes of a whole-model golden: the model config, the optimizer, the run;
    `precision` = "bf16" only for the bf16 emulation (the fp32 files have no such attribute)."""
    attrs = cfg.to_dict()
    attrs.update(lr=ocfg.lr, beta1=ocfg.beta1, beta2=ocfg.beta2, eps=ocfg.eps,
                 weight_decay=ocfg.weight_decay, grad_clip=ocfg.grad_clip,
                 decay_norms_and_embeddings=ocfg.decay_norms_and_embeddings,
                 batch=B, seq_len=T, steps=steps, seed=seed, init_std=init_std,
                 norm_noise=norm_noise, head_dim=cfg.head_dim)
    attrs["num_key_value_heads"] = cfg.kv_heads
    if bf16:
        attrs["precision"] = "bf16"
    return attrs


def compare_bf16(fname, r32: list, r16: list, bound=3e-2):
    """Prints the bf16 twin's per-step losses against the fp32 run's (relative differences of
    total and main) and requires them within bound: bf16 rounding, not a different model."""
    rel = [abs(b["total"] - a["total"]) / abs(a["total"]) for a, b in zip(r32, r16)]
    rel_main = [abs(b["main"] - a["main"]) / abs(a["main"]) for a, b in zip(r32, r16)]
    print(f"    {fname} vs fp32: total rel diff={['%.2e' % v for v in rel]} "
          f"main={['%.2e' % v for v in rel_main]}")
    assert max(rel + rel_main) < bound, (fname, rel, rel_main)


def write_model_golden(path, attrs: dict, init: dict, tokens, losses: dict, grads: list, norms,
                       final: dict, extra: dict | None = None, writer=Writer):
    """Writes a whole-model golden, datasets in this order: /params/* (initial), /tokens,
    /losses/<name> (in the order of `losses`), /grads0/* (step 0's gradients, before clipping),
    /grad_norm, /params_final/*, then the `extra` datasets by full name, then /grads1/*, ...
    (the later steps' gradients: what the weight check needs to know which updates rounding
    decides, tests/models/layer_check.h)."""
    w = writer(path, attrs)
    for k, v in init.items():
        w.put(f"params/{k}", v)
    w.put("tokens", tokens.int())
    for k, v in losses.items():
        w.put(f"losses/{k}", v)
    for k, v in grads[0].items():
        w.put(f"grads0/{k}", v)
    w.put("grad_norm", torch.tensor(norms))
    for k, v in final.items():
        w.put(f"params_final/{k}", v)
    for k, v in (extra or {}).items():
        w.put(k, v)
    for s in range(1, len(grads)):
        for k, v in grads[s].items():
            w.put(f"grads{s}/{k}", v)
    w.close()


def gen_model(out, fname, seed, cfg: ref.ModelConfig, ocfg: ref.OptimConfig, B, T, steps=3,
              init_std=0.1, norm_noise=0.1, bf16=False):
    """Writes a whole-model golden (bf16: the emulated bf16 projections); returns the per-step
    results of forward_backward."""
    g = torch.Generator().manual_seed(seed)
    params = ref.init_params(cfg, g, init_std=init_std, norm_noise=norm_noise)
    D = cfg.num_nextn_predict_layers
    tokens = torch.randint(0, cfg.vocab_size, (steps, B, T + 1 + D), generator=g)
    init = {k: v.detach().clone() for k, v in params.items()}
    results, norms, grads = train_steps(ref, params, cfg, ocfg, tokens, bf16=bf16)
    write_model_golden(os.path.join(out, fname),
                       model_attrs(cfg, ocfg, B, T, steps, seed, init_std, norm_noise, bf16=bf16),
                       init, tokens, step_losses(results, D), grads, norms, params)
    clipped = [n > ocfg.grad_clip for n in norms]
    print(f"  {fname}: total={['%.5f' % r['total'] for r in results]} "
          f"grad_norm={['%.4f' % n for n in norms]} clip={ocfg.grad_clip} clipped={clipped}")
    return results


def gen_models(out):
    mtp_cfg = ref.ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                              rope_theta=10000.0, rope_style=ref.ROTATE_HALF, rms_norm_eps=1e-5,
                              tie_word_embeddings=False, num_nextn_predict_layers=2,
                              mtp_loss_weight=0.3)
    # grad_clip 2.5 sits between the step norms, so some steps clip and some do not.
    mtp_opt = ref.OptimConfig(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                              grad_clip=2.5)
    r32 = gen_model(out, "model_mtp.h5", 2001, mtp_cfg, mtp_opt, B=2, T=24)
    # Its bf16 twin: same seed, so the same init and tokens; emulated bf16 projections.
    r16 = gen_model(out, "model_mtp_bf16.h5", 2001, mtp_cfg, mtp_opt, B=2, T=24, bf16=True)
    compare_bf16("model_mtp_bf16.h5", r32, r16)

    tied_cfg = ref.ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                               rope_theta=10000.0, rope_style=ref.INTERLEAVED, rms_norm_eps=1e-6,
                               tie_word_embeddings=True, num_nextn_predict_layers=1,
                               mtp_loss_weight=0.5)
    # A large clip: this file never clips (the unclipped path).
    tied_opt = ref.OptimConfig(lr=2e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.05,
                               grad_clip=100.0)
    gen_model(out, "model_tied.h5", 2002, tied_cfg, tied_opt, B=2, T=24)


# --------------------------------------------------------------------------------------------
# Self-checks of the reference
# --------------------------------------------------------------------------------------------


def self_check():
    g = torch.Generator().manual_seed(7)
    # RoPE against complex rotation.
    B, T, H, hd = 2, 9, 3, 8
    x = torch.randn(B, T, H, hd, generator=g, dtype=torch.float64)
    cos, sin = ref.rope_cos_sin(T, hd, 500.0)
    ang = torch.complex(cos.double(), sin.double())[None, :, None, :]
    inter = torch.view_as_real(torch.view_as_complex(x.reshape(B, T, H, hd // 2, 2)) * ang).reshape(x.shape)
    assert torch.allclose(ref.apply_rope(x, cos.double(), sin.double(), ref.INTERLEAVED), inter)
    half = torch.complex(x[..., : hd // 2], x[..., hd // 2 :]) * ang
    assert torch.allclose(ref.apply_rope(x, cos.double(), sin.double(), ref.ROTATE_HALF),
                          torch.cat([half.real, half.imag], -1))
    # Explicit vs fused attention, GQA against a per-head loop.
    q = torch.randn(2, 13, 4, 8, generator=g); k = torch.randn(2, 13, 2, 8, generator=g)
    v = torch.randn(2, 13, 2, 8, generator=g)
    a = ref.attention_core(q, k, v)
    assert torch.allclose(a, ref.attention_core(q, k, v, fast=True), atol=1e-5)
    for h in range(4):
        s = q[:, :, h] @ k[:, :, h // 2].transpose(1, 2) / np.sqrt(8)
        s = s.masked_fill(torch.ones(13, 13, dtype=torch.bool).triu(1), float("-inf"))
        assert torch.allclose(a[:, :, h], s.softmax(-1) @ v[:, :, h // 2], atol=1e-5)
    # fp32 model gradients vs fp64.
    cfg = ref.ModelConfig(vocab_size=31, num_nextn_predict_layers=2, tie_word_embeddings=True)
    p32 = ref.init_params(cfg, torch.Generator().manual_seed(3), init_std=0.1, norm_noise=0.1)
    p64 = {k: v.detach().double().requires_grad_(True) for k, v in p32.items()}
    w = torch.randint(0, 31, (2, 11 + 3), generator=g)
    ref.model_loss(p32, cfg, w)["total"].backward()
    ref.model_loss(p64, cfg, w)["total"].backward()
    worst = max(((p32[k].grad.double() - p64[k].grad).abs().max() / (p64[k].grad.abs().max() + 1e-12)).item()
                for k in p32)
    print(f"  fp32 vs fp64 model grads: worst relative (to max) error {worst:.2e}")
    assert worst < 1e-4
    # AdamW by hand (docs/model.md) vs torch.optim.AdamW with clipping.
    ocfg = ref.OptimConfig(lr=1e-2, weight_decay=0.1, grad_clip=0.5)
    params = ref.init_params(cfg, torch.Generator().manual_seed(3), init_std=0.1, norm_noise=0.1)
    mine = {k: v.detach().clone() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in mine.items()}
    vv = {k: torch.zeros_like(v) for k, v in mine.items()}
    opt = ref.make_optimizer(params, ocfg)
    for t in range(1, 4):
        ref.forward_backward(params, cfg, w)
        grads = {k: p.grad.detach().clone() for k, p in params.items()}
        norm = ref.optimizer_step(params, ocfg, opt)
        scale = min(1.0, ocfg.grad_clip / (norm + 1e-6))
        for k in mine:
            gk = grads[k] * scale
            if not (ref.is_norm(k) or k == "model.embed_tokens.weight"):
                mine[k] -= ocfg.lr * ocfg.weight_decay * mine[k]
            m[k] = ocfg.beta1 * m[k] + (1 - ocfg.beta1) * gk
            vv[k] = ocfg.beta2 * vv[k] + (1 - ocfg.beta2) * gk * gk
            denom = vv[k].sqrt() / np.sqrt(1 - ocfg.beta2 ** t) + ocfg.eps
            mine[k] -= ocfg.lr / (1 - ocfg.beta1 ** t) * m[k] / denom
        # Keep the by-hand copy on torch's trajectory (so only one step's rounding compares).
        worst = max((mine[k] - params[k].detach()).abs().max().item() for k in mine)
        assert worst < 1e-6, worst
        mine = {k: v.detach().clone() for k, v in params.items()}
    check_bf16(cfg, g)
    print("  self-checks passed")


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-30)).item()


def check_bf16(cfg: ref.ModelConfig, g):
    """The bf16 emulation: r() against round-to-nearest-even on the bits, Bf16Linear's forward
    and backward against the plan's formulas (fp64 sums of the same bf16 operands), and the
    emulated model in fp32 against the same emulation in fp64."""
    u = torch.cat([torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1 + 2 ** -8 + 2 ** -20]),
                   3 * torch.randn(4092, generator=g)])  # two ties (to even), one just above
    bits = u.view(torch.int32).long() & 0xFFFFFFFF
    rne = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    rne = torch.where(rne >= 2 ** 31, rne - 2 ** 32, rne).to(torch.int32).view(torch.float32)
    assert torch.equal(ref.bf16_round(u), rne)
    assert ref.bf16_round(u[:4]).tolist() == [1.0, 1 + 2 ** -6, -1.0, 1 + 2 ** -7]
    x = torch.randn(2, 5, 12, generator=g).requires_grad_(True)
    W = (0.3 * torch.randn(7, 12, generator=g)).requires_grad_(True)
    dy = torch.randn(2, 5, 7, generator=g)
    y = ref.proj(x, W, bf16=True)
    y.backward(dy)

    def r64(t):
        return ref.bf16_round(t.detach()).double()

    errs = [_rel(y, r64(x) @ r64(W).t()), _rel(x.grad, r64(dy) @ r64(W)),
            _rel(W.grad, r64(dy).reshape(-1, 7).t() @ r64(x).reshape(-1, 12))]
    assert max(errs) < 1e-6, errs
    # Autograd through bf16_round instead (dx = r(dy r(W)), dW = r(dy^T r(x))): not the plan.
    x2, W2 = x.detach().clone().requires_grad_(True), W.detach().clone().requires_grad_(True)
    (ref.bf16_round(x2) @ ref.bf16_round(W2).t()).backward(dy)
    naive = [_rel(x2.grad, x.grad), _rel(W2.grad, W.grad)]
    assert min(naive) > 1e-4, naive
    print(f"  bf16: r() is RNE on the bits; Bf16Linear y/dx/dW vs the formulas in fp64 "
          f"{errs[0]:.1e}/{errs[1]:.1e}/{errs[2]:.1e} (autograd through r() instead: dx "
          f"{naive[0]:.1e}, dW {naive[1]:.1e} off)")
    # Bf16Attention: its forward is r(attn(r(q), r(k), r(v))) bit for bit; its written-out
    # backward is the fp64 autograd gradient of the rounded operands within bf16's rounding of
    # out and of the gradients (GQA: 4 query heads over 2 kv heads).
    q = torch.randn(2, 9, 4, 8, generator=g).requires_grad_(True)
    k = torch.randn(2, 9, 2, 8, generator=g).requires_grad_(True)
    v = torch.randn(2, 9, 2, 8, generator=g).requires_grad_(True)
    dout = torch.randn(2, 9, 4, 8, generator=g)
    out = ref.Bf16Attention.apply(q, k, v)
    out.backward(dout)
    assert torch.equal(out, ref.bf16_round(ref.attention_core(*(ref.bf16_round(t.detach())
                                                                  for t in (q, k, v)))))
    exact = [r64(t).requires_grad_(True) for t in (q, k, v)]
    ref.attention_core(*exact).backward(r64(dout))
    att = [_rel(t.grad, e.grad) for t, e in zip((q, k, v), exact)]
    assert max(att) < 2e-2, att
    print(f"  bf16 attention dq/dk/dv vs fp64 autograd of the rounded operands "
          f"{att[0]:.1e}/{att[1]:.1e}/{att[2]:.1e} (bf16 rounding of out and the gradients)")
    # fp32 vs fp64 of the emulation (the same r() rule): rounding flips of bf16 operands.
    p32 = ref.init_params(cfg, torch.Generator().manual_seed(3), init_std=0.1, norm_noise=0.1)
    p64 = {k: v.detach().double().requires_grad_(True) for k, v in p32.items()}
    w = torch.randint(0, cfg.vocab_size, (2, 11 + 1 + cfg.num_nextn_predict_layers), generator=g)
    l32 = ref.model_loss(p32, cfg, w, bf16=True)["total"]
    l64 = ref.model_loss(p64, cfg, w, bf16=True)["total"]
    l32.backward()
    l64.backward()
    worst = max(_rel(p32[k].grad, p64[k].grad) for k in p32)
    assert worst < 5e-2 and abs(l32.item() - l64.item()) < 1e-6 * l64.item(), worst
    lfp32 = ref.model_loss({k: v.detach() for k, v in p32.items()}, cfg, w)["total"].item()
    print(f"  bf16 emulation fp32 vs fp64: loss {abs(l32.item() - l64.item()) / l64.item():.1e}, "
          f"grads worst relative (to max) {worst:.2e}; bf16 vs fp32 loss "
          f"{abs(l32.item() - lfp32) / lfp32:.1e}")


def setup(self_check) -> str:
    """Parses [--out DIR] [--check], runs self_check() under --check, makes DIR; returns DIR."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "goldens"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic, and kind to shared machines
    if args.check:
        self_check()
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, writing {args.out}")
    return args.out


def print_sizes(out, names):
    total = 0
    for f in names:
        size = os.path.getsize(os.path.join(out, f))
        total += size
        print(f"  {f:32s} {size / 1024:7.1f} KiB")
    print(f"  total {total / 1024:.1f} KiB")


def main():
    out = setup(self_check)
    gen_rmsnorm(out)
    gen_rope(out, ref.ROTATE_HALF, 1101)
    gen_rope(out, ref.INTERLEAVED, 1102)
    gen_attention(out, "attention_mha_rotate_half", 1111, kv=4, style=ref.ROTATE_HALF)
    gen_attention(out, "attention_gqa_interleaved", 1112, kv=2, style=ref.INTERLEAVED)
    gen_attention_core_long(out)
    gen_swiglu(out)
    gen_block(out)
    gen_head_ce(out)
    gen_models(out)
    print_sizes(out, sorted(f for f in os.listdir(out) if f.endswith(".h5")))


if __name__ == "__main__":
    main()
