#!/usr/bin/python3
"""PyTorch side of the CPU training benchmark: the model of tests/reference/model.py (the
definition in docs/model.md) trained for a few steps on random tokens.

    /usr/bin/python3 bench/torch_reference.py --vocab 4096 --hidden 256 --layers 4 --heads 4 \
        --kv-heads 4 --intermediate 1024 --seq 256 --batch 8 --mtp-depth 1 --threads 2 \
        --warmup-steps 2 --steps 5

Prints one JSON line: impl, tokens_per_s (batch*seq tokens per timed step, mean over the timed
steps), step_s (each timed step), torch_version, threads, loss_first / loss_last (total loss of
the first and last timed step), blas (torch's build BLAS setting) and blas_libs (the BLAS/LAPACK
libraries actually loaded in this process; with PyPI's torch numpy's OpenBLAS, which torch does
not use), mkl / onednn (the MKL and oneDNN versions the build reports, null when absent) and
cpu_capability (the ISA of ATen's CPU kernels). It runs on Debian's torch 1.13 and PyPI's 2.x
(bench/setup_torch_venv.sh); bench/run_bench.sh runs it under both.

A step is forward, loss, backward, gradient clipping, AdamW step, zero_grad, as the C++ trainer.
Attention uses PyTorch's fused scaled-dot-product attention (causal), AdamW its multi-tensor
(foreach) implementation.

With --n-routed-experts > 0 the model is tests/reference/moe.py's (docs/moe.md): layers
>= --first-k-dense and the MTP blocks use the MoE FFN, in its fast form (route, permute the kept
assignments by expert, one SwiGLU per expert on its contiguous rows via index_select, combine
with index_add), the loss includes the weighted auxiliary losses, and the aux-loss-free bias is
updated after each optimizer step. The JSON line then also has moe_counts_last (tokens per
expert of each MoE layer in the last step) and moe_dropped_last.

With --layer-types MLA every block (dense, MoE and MTP) has DeepSeek's multi-head latent
attention of tests/reference/mla.py in place of GQA (moe.py's model with MoeModelConfig.mla set;
widths from --mla-q-lora-rank, --mla-kv-lora-rank, --mla-qk-nope-head-dim,
--mla-qk-rope-head-dim, --mla-v-head-dim, defaults those of configs/moetron.proto), its
attention on the same fused causal SDPA (mla.mla(fast=True)); --kv-heads is then unused. The
training step is the same. The JSON line then also has mla (the five widths).

With --autocast-bf16 the forward and the loss run under torch.autocast(device_type="cpu",
dtype=torch.bfloat16) (PyTorch's CPU mixed precision: the ops of autocast's lower-precision list,
the GEMMs among them, on bf16 copies of their operands), backward outside it as PyTorch
recommends; parameters, gradients and AdamW stay fp32. The JSON line's precision says which
("bf16-autocast" or "fp32").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import mla  # noqa: E402
import model as ref  # noqa: E402
import moe  # noqa: E402


def blas_summary() -> dict:
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    info = {"blas": f"BLAS_INFO={m.group(1)}" if m else "unknown"}
    # What the build links for GEMMs besides BLAS_INFO (PyPI wheels link MKL statically, so it
    # shows in no loaded library's name) and the vector ISA its ATen kernels dispatch to.
    for key, pattern in (("mkl", r"Math Kernel Library Version ([0-9.]+)"),
                         ("onednn", r"MKL-DNN (v[0-9.]+)"),
                         ("cpu_capability", r"CPU capability usage: (\S+)")):
        m = re.search(pattern, cfg)
        info[key] = m.group(1).strip() if m else None
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path)
                if re.search(r"(blas|lapack|mkl|blis|atlas)", base, re.I):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    info["blas_libs"] = sorted(libs)
    for path in info["blas_libs"]:  # OpenBLAS reports its build and the kernel core it chose
        if "openblas" in os.path.basename(path):
            try:
                import ctypes
                lib = ctypes.CDLL(path)
                for fn in ("openblas_get_config", "openblas_get_corename"):
                    getattr(lib, fn).restype = ctypes.c_char_p
                info["openblas_config"] = lib.openblas_get_config().decode()
                info["openblas_core"] = lib.openblas_get_corename().decode()
            except (OSError, AttributeError):
                pass
    info["openblas_env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=0, help="0 means --heads")
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mtp-depth", type=int, default=1)
    ap.add_argument("--mtp-loss-weight", type=float, default=0.3)
    ap.add_argument("--tie-embeddings", action="store_true")
    ap.add_argument("--rope-style", default=ref.ROTATE_HALF, choices=[ref.ROTATE_HALF, ref.INTERLEAVED])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="<= 0 disables clipping")
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1234)
    # Mixture of experts (configs/moetron.proto model.moe); 0 routed experts = dense model.
    ap.add_argument("--n-routed-experts", type=int, default=0, help="0 = dense")
    ap.add_argument("--experts-per-tok", type=int, default=1)
    ap.add_argument("--moe-intermediate", type=int, default=256)
    ap.add_argument("--n-shared-experts", type=int, default=0)
    ap.add_argument("--first-k-dense", type=int, default=1)
    ap.add_argument("--routed-scaling", type=float, default=1.0)
    ap.add_argument("--scoring-func", default=moe.SIGMOID, choices=[moe.SIGMOID, moe.SOFTMAX])
    ap.add_argument("--norm-topk-prob", type=int, default=1, choices=[0, 1])
    ap.add_argument("--n-group", type=int, default=1)
    ap.add_argument("--topk-group", type=int, default=1)
    ap.add_argument("--bias-update-speed", type=float, default=0.0)
    ap.add_argument("--seq-aux-alpha", type=float, default=0.0)
    ap.add_argument("--aux-loss-coeff", type=float, default=0.0)
    ap.add_argument("--z-loss-coeff", type=float, default=0.0)
    ap.add_argument("--capacity-factor", type=float, default=0.0, help="0 = dropless")
    # The token mixer of every block (configs/moetron.proto model.layer_types / model.mla).
    ap.add_argument("--layer-types", default="ATTENTION", choices=["ATTENTION", "MLA"],
                    help="MLA: multi-head latent attention in every block (all-MLA only)")
    ap.add_argument("--mla-q-lora-rank", type=int, default=0, help="0 = q_proj directly")
    ap.add_argument("--mla-kv-lora-rank", type=int, default=64)
    ap.add_argument("--mla-qk-nope-head-dim", type=int, default=32)
    ap.add_argument("--mla-qk-rope-head-dim", type=int, default=16)
    ap.add_argument("--mla-v-head-dim", type=int, default=32)
    ap.add_argument("--autocast-bf16", action="store_true",
                    help="forward and loss under torch.autocast(cpu, bf16); fp32 params, AdamW")
    args = ap.parse_args()
    use_mla = args.layer_types == "MLA"

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.autograd.set_detect_anomaly(False)

    dense_kw = dict(vocab_size=args.vocab, hidden_size=args.hidden,
                    num_hidden_layers=args.layers, num_attention_heads=args.heads,
                    num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate,
                    rope_style=args.rope_style, tie_word_embeddings=args.tie_embeddings,
                    num_nextn_predict_layers=args.mtp_depth,
                    mtp_loss_weight=args.mtp_loss_weight)
    use_moe = args.n_routed_experts > 0
    ocfg = ref.OptimConfig(lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    g = torch.Generator().manual_seed(args.seed)
    moe_last = {}
    mla_cfg = None
    if use_mla:  # rope_theta and the latent norms' eps: the schema's defaults, as mla.MlaConfig's
        mla_cfg = mla.MlaConfig(
            hidden_size=args.hidden, heads=args.heads, q_lora_rank=args.mla_q_lora_rank,
            kv_lora_rank=args.mla_kv_lora_rank, qk_nope_head_dim=args.mla_qk_nope_head_dim,
            qk_rope_head_dim=args.mla_qk_rope_head_dim, v_head_dim=args.mla_v_head_dim,
            rope_style=args.rope_style)
    if not use_moe and not use_mla:
        cfg = ref.ModelConfig(**dense_kw)
        params = ref.init_params(cfg, g, init_std=args.init_std)
        opt = ref.make_optimizer(params, ocfg, foreach=True)
        train_params = params
    elif not use_moe:  # dense MLA: moe.py's model with no routed experts (model.py's FFNs)
        cfg = moe.MoeModelConfig(**dense_kw, mla=mla_cfg)
        params = moe.init_params(cfg, g, init_std=args.init_std)
        opt = moe.make_optimizer(params, ocfg, foreach=True)
        train_params = moe.trainable(params)
    else:
        cfg = moe.MoeModelConfig(
            **dense_kw, n_routed_experts=args.n_routed_experts,
            num_experts_per_tok=args.experts_per_tok, moe_intermediate_size=args.moe_intermediate,
            n_shared_experts=args.n_shared_experts, first_k_dense_replace=args.first_k_dense,
            routed_scaling_factor=args.routed_scaling, scoring_func=args.scoring_func,
            norm_topk_prob=bool(args.norm_topk_prob), n_group=args.n_group,
            topk_group=args.topk_group, bias_update_speed=args.bias_update_speed,
            seq_aux_loss_alpha=args.seq_aux_alpha, aux_loss_coeff=args.aux_loss_coeff,
            z_loss_coeff=args.z_loss_coeff, capacity_factor=args.capacity_factor, mla=mla_cfg)
        cfg.moe.validate()
        params = moe.init_params(cfg, g, init_std=args.init_std)
        opt = moe.make_optimizer(params, ocfg, foreach=True)
        train_params = moe.trainable(params)
    window = torch.randint(0, args.vocab, (args.batch, args.seq + 1 + args.mtp_depth), generator=g)

    def forward_context():  # backward runs outside autocast, as PyTorch recommends
        if args.autocast_bf16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        with forward_context():
            if use_moe or use_mla:
                losses = moe.model_loss(params, cfg, window, fast=True)
            else:
                losses = ref.model_loss(params, cfg, window, fast=True)
        losses["total"].backward()
        if use_moe:  # experts that got no token: zero gradient, as the C++ dense buffers
            for p in train_params.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        if ocfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(train_params.values()), ocfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if use_moe:
            counts = {k: st["counts"] for k, st in losses["moe"].items()}
            moe.update_biases(params, cfg, counts)
            moe_last["counts"] = {k: c.tolist() for k, c in counts.items()}
            moe_last["dropped"] = {k: st["dropped"] for k, st in losses["moe"].items()}
        return losses["total"].item()

    for _ in range(args.warmup_steps):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)

    tokens = args.batch * args.seq
    result = {
        "impl": "pytorch",
        "precision": "bf16-autocast" if args.autocast_bf16 else "fp32",
        "tokens_per_s": tokens * len(times) / sum(times) if times else 0.0,
        "step_s": [round(t, 6) for t in times],
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "params": sum(p.numel() for p in train_params.values()),
        "config": {k: v for k, v in vars(args).items()
                   if use_mla or k != "layer_types" and not k.startswith("mla_")},
    }
    if use_moe:
        result["moe_counts_last"] = moe_last["counts"]
        result["moe_dropped_last"] = moe_last["dropped"]
    if use_mla:
        result["mla"] = {k: getattr(mla_cfg, k) for k in ("q_lora_rank", "kv_lora_rank",
                                                        "qk_nope_head_dim", "qk_rope_head_dim",
                                                        "v_head_dim")}
    result.update(blas_summary())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
