"""Compares the Gated DeltaNet goldens (goldens/gdn_*.h5, from gdn.py) with Hugging Face
transformers' own Qwen3_5GatedDeltaNet (by hand, in the venv of setup_transformers_venv.sh; not
part of CI):

    .cache/venv-transformers/bin/python tests/reference/check_transformers_gdn.py [FILE ...]

For each file it builds Qwen3_5GatedDeltaNet from the file's attributes, loads the golden's
parameters (in_proj_qkv = rows [in_proj_q; in_proj_k; in_proj_v], conv1d.weight = the three
conv weights concatenated, unsqueezed at dim 1; every other name as is), runs the forward in
float32 (transformers' torch fallbacks: F.conv1d and torch_chunk_gated_delta_rule, chunk 64)
and the backward of sum(y * dy), and prints max |hf - golden| / max |golden| for y, the final
recurrent state (taken from the chunk function's output_final_state), dx and every parameter
gradient (the fused ones split back into the golden's names). The file is read with Debian's
/usr/bin/python3 + h5py when this interpreter has no h5py (check_torch_muon.load_h5).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check_torch_muon import load_h5  # noqa: E402


def rel(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / (b.abs().max() + 1e-30)).item()


def check(path: str, python: str) -> float:
    from transformers.models.qwen3_5 import modeling_qwen3_5 as mq
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig

    data, attrs = load_h5(path, python)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    cfg = Qwen3_5TextConfig(
        hidden_size=attrs["hidden_size"], num_hidden_layers=1, layer_types=["linear_attention"],
        linear_num_key_heads=attrs["linear_num_key_heads"],
        linear_key_head_dim=attrs["linear_key_head_dim"],
        linear_num_value_heads=attrs["linear_num_value_heads"],
        linear_value_head_dim=attrs["linear_value_head_dim"],
        linear_conv_kernel_dim=attrs["linear_conv_kernel_dim"], rms_norm_eps=attrs["rms_norm_eps"],
        hidden_act="silu")
    layer = mq.Qwen3_5GatedDeltaNet(cfg, 0).float()
    P = lambda n: t[f"params/{n}"]  # noqa: E731
    with torch.no_grad():
        layer.in_proj_qkv.weight.copy_(torch.cat([P("in_proj_q.weight"), P("in_proj_k.weight"),
                                                  P("in_proj_v.weight")]))
        layer.conv1d.weight.copy_(torch.cat([P("conv1d_q.weight"), P("conv1d_k.weight"),
                                             P("conv1d_v.weight")])[:, None, :])
        for n in ("in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight", "A_log", "dt_bias",
                  "norm.weight", "out_proj.weight"):
            layer.get_parameter(n).copy_(P(n))

    states = []
    chunk = mq.torch_chunk_gated_delta_rule

    def chunk_with_state(*args, **kwargs):
        kwargs["output_final_state"] = True
        o, s = chunk(*args, **kwargs)
        states.append(s)
        return o, s

    mq.torch_chunk_gated_delta_rule = chunk_with_state  # the forward looks the name up per call
    try:
        x = t["inputs/x"].clone().requires_grad_(True)
        y = layer(x)
    finally:
        mq.torch_chunk_gated_delta_rule = chunk
    (y * t["inputs/dy"]).sum().backward()

    kd = attrs["linear_num_key_heads"] * attrs["linear_key_head_dim"]
    g_qkv = layer.in_proj_qkv.weight.grad
    g_conv = layer.conv1d.weight.grad[:, 0]
    hf_grads = {"in_proj_q.weight": g_qkv[:kd], "in_proj_k.weight": g_qkv[kd:2 * kd],
                "in_proj_v.weight": g_qkv[2 * kd:], "conv1d_q.weight": g_conv[:kd],
                "conv1d_k.weight": g_conv[kd:2 * kd], "conv1d_v.weight": g_conv[2 * kd:]}
    for n in ("in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight", "A_log", "dt_bias",
              "norm.weight", "out_proj.weight"):
        hf_grads[n] = layer.get_parameter(n).grad
    res = {"y": rel(y.detach(), t["outputs/y"]),
           "final_state": rel(states[0].detach(), t["outputs/final_state"]),
           "grads/x": rel(x.grad, t["grads/x"])}
    res.update({f"grads/{n}": rel(g, t[f"grads/params/{n}"]) for n, g in hf_grads.items()})
    assert len(states) == 1 and set(hf_grads) == {k[len("params/"):] for k in t if k.startswith("params/")}
    worst = max(res.values())
    print(f"{os.path.basename(path)}: " + ", ".join(f"{k} {v:.1e}" for k, v in res.items()))
    print(f"  worst {worst:.1e} (relative to the largest golden entry)")
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--python", default="/usr/bin/python3", help="an interpreter with h5py")
    args = ap.parse_args()
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    files = args.files or sorted(glob.glob(os.path.join(HERE, "goldens", "gdn_*.h5")))
    worst = max(check(f, args.python) for f in files)
    assert worst < 1e-4, worst


if __name__ == "__main__":
    main()
