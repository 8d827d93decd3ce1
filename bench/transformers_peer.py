#!/usr/bin/env python3
"""Hugging Face peer of the CPU benchmark for the Gated DeltaNet hybrid: transformers' own
Qwen3_5MoeForCausalLM (model_type qwen3_5_moe_text; random init, fp32, SDPA attention) trained
for a few steps on random tokens. Run it with a Python that has transformers >= 5 (the venv
.cache/venv-transformers); bench/run_hybrid_bench.sh hands it moetron_bench's dims:

    .cache/venv-transformers/bin/python bench/transformers_peer.py --vocab 4096 --hidden 256 \\
        --layer-types GATED_DELTANET,GATED_DELTANET,GATED_DELTANET,ATTENTION --heads 4 \\
        --kv-heads 2 --head-dim 64 --partial-rotary-factor 0.25 --seq 256 --batch 8 --threads 2

The config maps onto Hugging Face's as checkpoint/qwen3_5_moe.cc's config_json does. A step is
forward on [batch, seq] tokens, Hugging Face's causal-LM loss against the next tokens (the
[batch, seq + 1] window shifted by one, passed as shift_labels, so batch * seq predictions as
moetron's), backward, global-norm clipping, foreach AdamW (no decay on 1-D weights and the
embedding, as moetron), zero_grad. No torch.compile. Prints one JSON line: tokens_per_s (batch *
seq per timed step, mean over the timed steps), step_s, params, loss_first / loss_last,
torch_version, transformers_version, experts_implementation (the MoE path the model dispatched
to), gdn_kernels (per Gated DeltaNet function: "fla" / "causal_conv1d" when importable, else
"torch fallback") and attn_implementation.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--vocab", type=int, default=4096)
    add("--hidden", type=int, default=256)
    add("--layer-types", default="GATED_DELTANET,GATED_DELTANET,GATED_DELTANET,ATTENTION",
        help="comma-separated GATED_DELTANET / ATTENTION, one per layer")
    add("--heads", type=int, default=4)
    add("--kv-heads", type=int, default=2)
    add("--head-dim", type=int, default=0, help="0 = hidden / heads")
    add("--partial-rotary-factor", type=float, default=0.25)
    add("--rope-theta", type=float, default=10000.0)
    add("--rms-norm-eps", type=float, default=1e-6)
    add("--linear-num-key-heads", type=int, default=2)
    add("--linear-key-head-dim", type=int, default=64)
    add("--linear-num-value-heads", type=int, default=4)
    add("--linear-value-head-dim", type=int, default=64)
    add("--linear-conv-kernel-dim", type=int, default=4)
    add("--n-routed-experts", type=int, default=16)
    add("--experts-per-tok", type=int, default=4)
    add("--moe-intermediate", type=int, default=256)
    add("--n-shared-experts", type=int, default=1)
    add("--tie-embeddings", action="store_true")
    add("--init-std", type=float, default=0.02)
    add("--seq", type=int, default=256)
    add("--batch", type=int, default=8)
    add("--lr", type=float, default=1e-3)
    add("--beta1", type=float, default=0.9)
    add("--beta2", type=float, default=0.95)
    add("--eps", type=float, default=1e-8)
    add("--weight-decay", type=float, default=0.1)
    add("--decay-norms-and-embeddings", action="store_true")
    add("--grad-clip", type=float, default=1.0, help="<= 0 disables clipping")
    add("--experts-implementation", default=None,
        help="transformers' experts_implementation (default: its own choice)")
    add("--threads", type=int, default=2)
    add("--steps", type=int, default=5)
    add("--warmup-steps", type=int, default=2)
    add("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)

    import transformers
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    hf_types = {"GATED_DELTANET": "linear_attention", "ATTENTION": "full_attention"}
    kinds = args.layer_types.split(",")
    if not set(kinds) <= set(hf_types):
        ap.error(f"--layer-types {args.layer_types}: only GATED_DELTANET and ATTENTION")
    cfg = Qwen3_5MoeTextConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=len(kinds),
        layer_types=[hf_types[k] for k in kinds], num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.head_dim or args.hidden // args.heads,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta,
                         "partial_rotary_factor": args.partial_rotary_factor},
        linear_num_key_heads=args.linear_num_key_heads,
        linear_key_head_dim=args.linear_key_head_dim,
        linear_num_value_heads=args.linear_num_value_heads,
        linear_value_head_dim=args.linear_value_head_dim,
        linear_conv_kernel_dim=args.linear_conv_kernel_dim, num_experts=args.n_routed_experts,
        num_experts_per_tok=args.experts_per_tok, moe_intermediate_size=args.moe_intermediate,
        shared_expert_intermediate_size=args.n_shared_experts * args.moe_intermediate,
        output_router_logits=False,  # no auxiliary loss (moetron's bench configs have none)
        hidden_act="silu", rms_norm_eps=args.rms_norm_eps, max_position_embeddings=args.seq,
        initializer_range=args.init_std, tie_word_embeddings=args.tie_embeddings, use_cache=False)
    kw = {"attn_implementation": "sdpa", "dtype": torch.float32}
    if args.experts_implementation:
        kw["experts_implementation"] = args.experts_implementation
    model = Qwen3_5MoeForCausalLM._from_config(cfg, **kw)
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]
    decay, no_decay = [], []
    embed = model.get_input_embeddings().weight
    for p in params:
        skip = (p.ndim < 2 or p is embed) and not args.decay_norms_and_embeddings
        (no_decay if skip else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                            betas=(args.beta1, args.beta2), eps=args.eps, foreach=True)

    g = torch.Generator().manual_seed(args.seed)
    window = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    inputs, targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def step() -> float:
        out = model(input_ids=inputs, labels=inputs, shift_labels=targets, use_cache=False)
        out.loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(args.warmup_steps):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)

    experts = model.config._experts_implementation
    if experts == "grouped_mm":  # which op transformers' _grouped_mm dispatches to on these weights
        from transformers.integrations import moe as hf_moe
        w = next(m.gate_up_proj for m in model.modules() if hasattr(m, "gate_up_proj"))
        native = hf_moe._can_use_grouped_mm(w.new_zeros(1, w.shape[-1]), w, None)
        experts += (" (torch.nn.functional.grouped_mm)" if native and hasattr(torch.nn.functional, "grouped_mm")
                    else " (torch._grouped_mm)" if native else " (transformers' per-expert torch.mm fallback)")

    def kernel(package: str) -> str:  # as transformers' use_kernel_func_from_hub_with_fallback
        return package if importlib.util.find_spec(package) else "torch fallback"

    tokens = args.batch * args.seq
    print(json.dumps({
        "impl": "transformers",
        "model_class": type(model).__name__,
        "tokens_per_s": tokens * len(times) / sum(times) if times else 0.0,
        "step_s": [round(t, 6) for t in times],
        "params": sum(p.numel() for p in params),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
        "experts_implementation": experts,
        "gdn_kernels": {"chunk_gated_delta_rule": kernel("fla"),
                        "causal_conv1d_fn": kernel("causal_conv1d"),
                        "kernels_hub_installed": importlib.util.find_spec("kernels") is not None},
        "config": vars(args),
    }))


if __name__ == "__main__":
    main()
