"""Loads a `moetron export` in current Hugging Face transformers, in transformers' own
Glm4MoeForCausalLM (no trust_remote_code), and compares its next-token logits with moetron's on
the same tokens. Not part of CI: it needs the venv tests/reference/setup_transformers_venv.sh
makes (current transformers and PyTorch from PyPI). docs/export.md records the result.

    tests/reference/setup_transformers_venv.sh
    .cache/venv-transformers/bin/python tests/reference/check_transformers_export.py CKPT \
        [--moetron build/trainer/moetron] [--logits build/tests/checkpoint/export_logits] \
        [--batch 2 --seq 64] [--dtype fp32] [--rtol 1e-4] [--dataset DIR] [--shard-size BYTES]
        [--work DIR]

It runs `moetron export CKPT --out WORK/hf --dtype DTYPE`, then export_logits (moetron's own
forward on the checkpoint: the main head's logits of BATCH x SEQ random tokens), loads WORK/hf
with Glm4MoeForCausalLM.from_pretrained (eager attention, float32) and requires
max |transformers - moetron| <= rtol * max |moetron|.

It also loads the MTP module with transformers' own MtpModel and compares its logits with the
PyTorch reference's MTP (tests/reference/model.py, tied to moetron's C++ by the goldens) on
the exported weights. transformers finds MTP weights only under the layer numbers of the
released GLM-4.5 checkpoints (its Glm4MoePreTrainedModel._keys_to_ignore_on_load_unexpected
holds model.layers.46 and 92), so the check points that list at this model's MTP layers first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


def run(cmd: list[str]) -> str:
    print("+", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    print(out.stdout + out.stderr, end="", flush=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed with exit status {out.returncode}")
    return out.stdout


def compare(name: str, mine: np.ndarray, theirs: np.ndarray, rtol: float) -> bool:
    diff = np.abs(mine - theirs)
    scale = float(np.max(np.abs(theirs)))
    rel = float(np.max(diff)) / scale
    big = np.abs(theirs) > 1e-2 * scale
    elem = float(np.max(diff[big] / np.abs(theirs[big])))
    ok = rel <= rtol
    print(f"{name}: [{mine.shape[0]}, {mine.shape[1]}] logits, max |diff| {np.max(diff):.3e}, "
          f"max |logit| {scale:.4f}, max |diff| / max |logit| {rel:.3e} (tolerance {rtol:g}), "
          f"max elementwise relative (|logit| > 1% of max) {elem:.3e}, "
          f"argmax agree {np.mean(mine.argmax(1) == theirs.argmax(1)) * 100:.1f}%: "
          f"{'ok' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--moetron", default=os.path.join(ROOT, "build/trainer/moetron"))
    ap.add_argument("--logits", default=os.path.join(ROOT, "build/tests/checkpoint/export_logits"))
    ap.add_argument("--dataset", help="passed to moetron export (the tokenizer's dataset)")
    ap.add_argument("--shard-size", help="passed to moetron export (default: its own)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--work", help="where the export and logits go (default: a temporary directory)")
    a = ap.parse_args()

    import transformers
    from transformers import AutoTokenizer, Glm4MoeForCausalLM
    from transformers.models.glm4_moe import modeling_glm4_moe

    torch.manual_seed(0)
    work = a.work or tempfile.mkdtemp(prefix="moetron-transformers-")
    hf = os.path.join(work, "hf")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}", flush=True)
    cmd = [a.moetron, "export", a.checkpoint, "--out", hf, "--dtype", a.dtype, "--overwrite"]
    if a.dataset:
        cmd += ["--dataset", a.dataset]
    if a.shard_size:
        cmd += ["--shard-size", a.shard_size]
    run(cmd)
    tokens_file, logits_file = os.path.join(work, "tokens.i32"), os.path.join(work, "logits.f32")
    run([a.logits, a.checkpoint, tokens_file, logits_file, str(a.batch), str(a.seq)])
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    V, L, D = config["vocab_size"], config["num_hidden_layers"], config["num_nextn_predict_layers"]
    tokens = torch.from_numpy(np.fromfile(tokens_file, dtype=np.int32).astype(np.int64)).view(a.batch, a.seq)
    theirs = np.fromfile(logits_file, dtype=np.float32).reshape(a.batch * a.seq, V)

    model = Glm4MoeForCausalLM.from_pretrained(hf, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert type(model) is modeling_glm4_moe.Glm4MoeForCausalLM, type(model)
    assert model.config.rope_parameters["partial_rotary_factor"] == 1.0, model.config.rope_parameters
    with torch.no_grad():
        out = model(input_ids=tokens, output_hidden_states=True)
    mine = out.logits.reshape(-1, V).float().numpy()
    ok = compare(f"main head, transformers Glm4MoeForCausalLM vs moetron ({a.dtype} export)",
                 mine, theirs, a.rtol)

    # The tokenizer (byte-level tokenizer.json) through AutoTokenizer.
    if os.path.exists(os.path.join(hf, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained(hf)
        text = "GLM-4.5 export: naïve café, 日本語, \x00\xff\n"
        ids = tok.encode(text)
        same = ids == list(text.encode("utf-8")) and tok.decode(ids) == text
        print(f"tokenizer: {type(tok).__name__}, encode = UTF-8 bytes and decode round trip: "
              f"{'ok' if same else 'FAIL'}")
        ok &= same

    # MTP: transformers' MtpModel on the exported layers L..L+D-1 vs the PyTorch reference.
    if D > 0:
        from transformers.modeling_layers import MtpModel
        import model as ref
        import moe
        from safetensors_reader import read_dir

        model._keys_to_ignore_on_load_unexpected = [rf"model\.layers\.{L + k}\..*" for k in range(D)]
        mtp = MtpModel.from_pretrained(model)
        mtp.eval()
        T = a.seq - D
        h0 = out.hidden_states[-1][:, :T]  # after model.norm: what transformers' drafting feeds
        exported = {k: torch.from_numpy(v[1].copy()) for k, v in read_dir(hf)[0].items()}
        cfg = moe.MoeModelConfig(
            vocab_size=V, hidden_size=config["hidden_size"], num_hidden_layers=L,
            num_attention_heads=config["num_attention_heads"],
            num_key_value_heads=config["num_key_value_heads"],
            intermediate_size=config["intermediate_size"], rope_theta=config["rope_theta"],
            rope_style=ref.ROTATE_HALF, rms_norm_eps=config["rms_norm_eps"],
            num_nextn_predict_layers=D, n_routed_experts=config["n_routed_experts"],
            num_experts_per_tok=config["num_experts_per_tok"],
            moe_intermediate_size=config["moe_intermediate_size"],
            n_shared_experts=config["n_shared_experts"],
            first_k_dense_replace=config["first_k_dense_replace"],
            routed_scaling_factor=config["routed_scaling_factor"], norm_topk_prob=config["norm_topk_prob"],
            n_group=config["n_group"], topk_group=config["topk_group"])
        embed, head = exported["model.embed_tokens.weight"], exported["lm_head.weight"]
        with torch.no_grad():
            h_t, h_r = h0, h0
            positions = torch.arange(T)[None].expand(a.batch, T)
            for k in range(1, D + 1):
                ids = tokens[:, k : k + T]
                h_t = mtp.forward_layer(k - 1, h_t, positions, None, input_ids=ids)
                mtp_t = mtp._project_to_logits(h_t).reshape(-1, V).float().numpy()
                pre = f"model.layers.{L + k - 1}."
                e = ref.rms_norm(embed[ids], exported[pre + "enorm.weight"], cfg.rms_norm_eps)
                hn = ref.rms_norm(h_r, exported[pre + "hnorm.weight"], cfg.rms_norm_eps)
                x = torch.cat([e, hn], dim=-1) @ exported[pre + "eh_proj.weight"].t()
                h_r = ref.rms_norm(moe.block(x, exported, pre, cfg, L + k - 1, {}),
                                   exported[pre + "shared_head.norm.weight"], cfg.rms_norm_eps)
                mtp_r = (h_r @ head.t()).reshape(-1, V).numpy()
                ok &= compare(f"MTP module {k}, transformers MtpModel vs the PyTorch reference", mtp_t,
                              mtp_r, a.rtol)
    print("check_transformers_export:", "ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
