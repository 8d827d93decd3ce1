"""Compares the Qwen goldens (goldens/gated_attention.h5 from gen_qwen_goldens.py,
goldens/moe_qwen_shared_gate.h5 from gen_moe_goldens.py) with Hugging Face transformers' own
Qwen3_5MoeAttention and Qwen3_5MoeSparseMoeBlock (by hand, in the venv of
setup_transformers_venv.sh; not part of CI):

    .cache/venv-transformers/bin/python tests/reference/check_transformers_qwen.py [--python P]

Each layer is built from the file's attributes (Qwen3_5MoeTextConfig), loaded with the golden's
parameters (the MoE's experts fused as transformers stores them: gate_up_proj [E, 2I, d] = per
expert [gate_proj; up_proj], down_proj [E, d, I]; shared_experts.* as shared_expert.*), run in
float32 (eager attention with an additive causal mask; the RoPE tables from
Qwen3_5MoeTextRotaryEmbedding, i.e. fp32 inv_freq and angles), and the backward of
sum(y * dy) (the MoE file has no balance losses, so that is its whole objective). Printed:
max |hf - golden| / max |golden| for y, dx and every parameter gradient. The files are read
with Debian's /usr/bin/python3 + h5py when this interpreter has no h5py
(check_torch_muon.load_h5).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check_torch_muon import load_h5  # noqa: E402


def rel(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / (b.abs().max() + 1e-30)).item()


def report(name, res):
    worst = max(res.values())
    print(f"{name}: " + ", ".join(f"{k} {v:.1e}" for k, v in res.items()))
    print(f"  worst {worst:.1e} (relative to the largest golden entry)")
    return worst


def check_attention(path: str, python: str) -> float:
    from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as mq
    from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig

    data, a = load_h5(path, python)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    cfg = Qwen3_5MoeTextConfig(
        hidden_size=a["hidden_size"], num_hidden_layers=1, layer_types=["full_attention"],
        num_attention_heads=a["heads"], num_key_value_heads=a["kv_heads"], head_dim=a["head_dim"],
        rms_norm_eps=a["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": a["rope_theta"],
                         "partial_rotary_factor": a["partial_rotary_factor"]})
    cfg._attn_implementation = "eager"
    attn = mq.Qwen3_5MoeAttention(cfg, 0).float()
    rope = mq.Qwen3_5MoeTextRotaryEmbedding(cfg)
    names = [k[len("params/"):] for k in t if k.startswith("params/")]
    assert sorted(names) == sorted(n for n, _ in attn.named_parameters()), names
    with torch.no_grad():
        for n in names:
            attn.get_parameter(n).copy_(t[f"params/{n}"])
    x = t["inputs/x"].clone().requires_grad_(True)
    B, T = a["batch"], a["seq_len"]
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = rope(x, pos)
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
    y, _ = attn(x, (cos, sin), mask)
    (y * t["inputs/dy"]).sum().backward()
    rot = a["rotary_dim"]
    res = {"rope_cos": rel(cos[0, :, : rot // 2], t["outputs/rope_cos"]),
           "rope_sin": rel(sin[0, :, : rot // 2], t["outputs/rope_sin"]),
           "y": rel(y.detach(), t["outputs/y"]), "grads/x": rel(x.grad, t["grads/x"])}
    res.update({f"grads/{n}": rel(attn.get_parameter(n).grad, t[f"grads/params/{n}"])
                for n in names})
    return report(os.path.basename(path), res)


def check_moe(path: str, python: str) -> float:
    from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as mq
    from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig

    data, a = load_h5(path, python)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    assert a["scoring_func"] == "softmax" and a["norm_topk_prob"] == 1 and a["n_group"] == 1
    assert a["routed_scaling_factor"] == 1.0 and a["shared_expert_gate"] == 1
    assert a["n_shared_experts"] == 1 and a["capacity_factor"] == 0
    assert not t["params/gate.e_score_correction_bias"].any()
    assert a["seq_aux_loss_alpha"] == a["aux_loss_coeff"] == a["z_loss_coeff"] == 0
    E, I = a["n_routed_experts"], a["moe_intermediate_size"]
    cfg = Qwen3_5MoeTextConfig(
        hidden_size=a["hidden_size"], num_hidden_layers=1, layer_types=["full_attention"],
        num_experts=E, num_experts_per_tok=a["num_experts_per_tok"], moe_intermediate_size=I,
        shared_expert_intermediate_size=a["n_shared_experts"] * I, hidden_act="silu")
    blk = mq.Qwen3_5MoeSparseMoeBlock(cfg).float()
    P = lambda n: t[f"params/{n}"]  # noqa: E731
    with torch.no_grad():
        blk.gate.weight.copy_(P("gate.weight"))
        blk.experts.gate_up_proj.copy_(torch.stack(
            [torch.cat([P(f"experts.{e}.gate_proj.weight"), P(f"experts.{e}.up_proj.weight")])
             for e in range(E)]))
        blk.experts.down_proj.copy_(torch.stack([P(f"experts.{e}.down_proj.weight")
                                                 for e in range(E)]))
        for n in ("gate_proj", "up_proj", "down_proj"):
            getattr(blk.shared_expert, n).weight.copy_(P(f"shared_experts.{n}.weight"))
        blk.shared_expert_gate.weight.copy_(P("shared_expert_gate.weight"))
    x = t["inputs/x"].clone().requires_grad_(True)
    _, _, idx = blk.gate(x)
    y = blk(x[None])[0]
    (y * t["inputs/dy"]).sum().backward()
    assert torch.equal(idx.int(), t["outputs/topk_idx"]), "routing differs"
    gu, dn = blk.experts.gate_up_proj.grad, blk.experts.down_proj.grad
    hf = {"gate.weight": blk.gate.weight.grad,
          "shared_expert_gate.weight": blk.shared_expert_gate.weight.grad}
    for e in range(E):
        hf[f"experts.{e}.gate_proj.weight"] = gu[e, :I]
        hf[f"experts.{e}.up_proj.weight"] = gu[e, I:]
        hf[f"experts.{e}.down_proj.weight"] = dn[e]
    for n in ("gate_proj", "up_proj", "down_proj"):
        hf[f"shared_experts.{n}.weight"] = getattr(blk.shared_expert, n).weight.grad
    assert set(hf) == {k[len("grads/params/"):] for k in t if k.startswith("grads/params/")}
    res = {"y": rel(y.detach(), t["outputs/y"]), "grads/x": rel(x.grad, t["grads/x"])}
    res.update({f"grads/{n}": rel(g, t[f"grads/params/{n}"]) for n, g in hf.items()})
    return report(os.path.basename(path) + " (topk_idx identical)", res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/usr/bin/python3", help="an interpreter with h5py")
    ap.add_argument("--dir", default=os.path.join(HERE, "goldens"))
    args = ap.parse_args()
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    worst = max(check_attention(os.path.join(args.dir, "gated_attention.h5"), args.python),
                check_moe(os.path.join(args.dir, "moe_qwen_shared_gate.h5"), args.python))
    assert worst < 1e-4, worst


if __name__ == "__main__":
    main()
