"""Loads a `moetron export` in current Hugging Face transformers, in transformers' own
Glm4MoeForCausalLM, DeepseekV3ForCausalLM or Qwen3_5MoeForCausalLM (whichever config.json's
model_type names: glm4_moe, deepseek_v3, qwen3_5_moe_text; no trust_remote_code), and compares its next-token logits with moetron's on the same tokens and its
greedy continuation with `moetron generate`'s. Not part of CI: it needs the venv
tests/reference/setup_transformers_venv.sh makes (current transformers and PyTorch from PyPI).
docs/export.md records the results.

    tests/reference/setup_transformers_venv.sh
    .cache/venv-transformers/bin/python tests/reference/check_transformers_export.py CKPT \
        [--moetron build/trainer/moetron] [--logits build/tests/checkpoint/export_logits] \
        [--batch 2 --seq 64] [--dtype fp32] [--rtol 1e-4] [--dataset DIR] [--shard-size BYTES]
        [--prompt TEXT --max-tokens 100] [--work DIR]

It runs `moetron export CKPT --out WORK/hf --dtype DTYPE`, then export_logits (moetron's own
forward on the checkpoint: the main head's logits of BATCH x SEQ random tokens), loads WORK/hf
with from_pretrained (eager attention, float32; no missing weights, unexpected ones only in the
MTP layers: model.layers.L.. for glm4_moe / deepseek_v3, mtp.* for qwen3_5_moe_text, which
transformers drops on load) and requires max |transformers - moetron| <= rtol * max |moetron|.

Greedy continuation (byte tokenizer only): `moetron generate CKPT --prompt TEXT --max-tokens N`
(its incremental decoder, KV cache and, for MLA, the absorbed form; for Gated DeltaNet the
recurrent state and conv window) against transformers'
model.generate(do_sample=False) on the prompt's bytes: the N generated token ids must be equal
(for an fp32 export; a bf16 one's is reported, not checked, as moetron decodes the fp32
checkpoint).

deepseek_v3 besides: the loaded config's rope_interleave, q_lora_rank and rope_parameters are
config.json's (transformers 5 takes rope_scaling over rope_parameters when both are there, so
both are compared with what it kept); its RoPE inverse frequencies and attention factor and its
softmax scale are those of tests/reference/mla.py for the same settings; q_lora_rank null builds
q_proj; and flipping model.config.rope_interleave after loading must move the logits (the flag
is read at run time, so this shows the export's value is the one that matters).

qwen3_5_moe_text besides: the loaded config's layer_types, head_dim, linear_* widths and
rope_parameters (partial_rotary_factor, whose default when absent is 0.25) are config.json's,
the built layers are GatedDeltaNet / gated attention as layer_types says, and the rotary
embedding's inverse frequencies are theta^(-2j/rot) for rot = int(head_dim *
partial_rotary_factor), with attention scaling 1 and softmax scale head_dim^-0.5.

glm4_moe and deepseek_v3 only (transformers has no MTP for qwen3_5_moe_text; its mtp.* weights
are ignored on load, so that check is skipped): it also loads the MTP module with transformers' own MtpModel and compares its logits with the
PyTorch reference's MTP (tests/reference/model.py, moe.py, mla.py, tied to moetron's C++ by the
goldens) on the exported weights. transformers finds MTP weights only under the layer numbers of
the released checkpoints (Glm4MoePreTrainedModel._keys_to_ignore_on_load_unexpected holds
model.layers.46 and 92, DeepseekV3PreTrainedModel's model.layers.61), so the check points that
list at this model's MTP layers first.
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


def run_bytes(cmd: list[str]) -> bytes:
    """run() for a command whose stdout is raw bytes (moetron generate's byte tokens); stderr
    is printed."""
    print("+", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True)
    print(out.stderr.decode(errors="replace"), end="", flush=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed with exit status {out.returncode}")
    return out.stdout


def check_deepseek_model(model, config: dict, tokens, mine: np.ndarray) -> bool:
    """What transformers made of a deepseek_v3 config.json (see the module docstring)."""
    import mla
    from check_export import deepseek_reference_config
    ok = True
    c = model.config
    rp = config["rope_parameters"]
    kept = dict(c.rope_parameters)
    print(f"deepseek_v3 config as loaded: rope_interleave {c.rope_interleave}, q_lora_rank "
          f"{c.q_lora_rank}, head_dim {c.head_dim}, qk_head_dim {c.qk_head_dim}, num_key_value_heads "
          f"{c.num_key_value_heads}, max_position_embeddings {c.max_position_embeddings}, "
          f"num_mtp_layers {c.num_mtp_layers}, rope_parameters {kept}", flush=True)
    same = (c.rope_interleave is config["rope_interleave"] and c.q_lora_rank == config["q_lora_rank"]
            and c.head_dim == config["qk_rope_head_dim"]
            and c.num_key_value_heads == config["num_attention_heads"]
            and c.num_mtp_layers == config["num_nextn_predict_layers"])
    # rope_parameters: what transformers kept (rope_scaling when present, else rope_parameters,
    # plus the top-level rope_theta) must hold config.json's rope_parameters' values.
    for k, v in rp.items():
        if k not in kept or kept[k] != v:
            print(f"  loaded rope_parameters[{k!r}] = {kept.get(k, 'absent')!r}, config.json's {v!r}")
            same = False
    extra = {k: kept[k] for k in kept if k not in rp}
    if extra:
        print(f"  loaded rope_parameters keys not in config.json's rope_parameters: {extra} "
              "(from rope_scaling, which transformers takes when present)")
    attn0 = model.model.layers[0].self_attn
    if (config["q_lora_rank"] is None) != (attn0.q_proj is not None and attn0.q_a_proj is None):
        print(f"  q_lora_rank {config['q_lora_rank']}: q_proj {attn0.q_proj}, q_a_proj {attn0.q_a_proj}")
        same = False
    print(f"deepseek_v3 config fields as config.json's: {'ok' if same else 'FAIL'}", flush=True)
    ok &= same

    # RoPE and softmax scale against mla.py.
    ref_cfg = deepseek_reference_config(config).mla
    rot = model.model.rotary_emb
    yarn = mla.yarn_of(ref_cfg.yarn)
    if yarn is None:
        j = torch.arange(ref_cfg.qk_rope_head_dim // 2, dtype=torch.float64)
        inv_ref, af_ref = ref_cfg.rope_theta ** (-2.0 * j / ref_cfg.qk_rope_head_dim), 1.0
    else:
        inv_ref, af_ref = mla.yarn_inv_freq_and_factor(
            ref_cfg.qk_rope_head_dim, ref_cfg.rope_theta, yarn.factor,
            yarn.original_max_position_embeddings, yarn.beta_fast, yarn.beta_slow, yarn.mscale,
            yarn.mscale_all_dim)
    inv_hf = rot.inv_freq.double()
    e_inv = float(((inv_hf - inv_ref).abs() / inv_ref).max())
    e_af = abs(rot.attention_scaling - af_ref) / af_ref
    e_scale = abs(attn0.scaling - mla.softmax_scale(ref_cfg)) / mla.softmax_scale(ref_cfg)
    rope_ok = e_inv < 1e-6 and e_af < 1e-6 and e_scale < 1e-6
    print(f"RoPE ({rot.rope_type}): inv_freq vs mla.py {e_inv:.1e} relative (transformers' are "
          f"float32), attention factor {rot.attention_scaling:.9f} vs {af_ref:.9f}, softmax scale "
          f"{attn0.scaling:.9f} vs {mla.softmax_scale(ref_cfg):.9f}: {'ok' if rope_ok else 'FAIL'}",
          flush=True)
    ok &= rope_ok

    # rope_interleave is read at run time: the other value must give other logits.
    V = config["vocab_size"]
    c.rope_interleave = not config["rope_interleave"]
    try:
        with torch.no_grad():
            flipped = model(input_ids=tokens).logits.reshape(-1, V).float().numpy()
    finally:
        c.rope_interleave = config["rope_interleave"]
    moved = float(np.max(np.abs(flipped - mine))) / float(np.max(np.abs(mine)))
    print(f"rope_interleave flipped to {not config['rope_interleave']} after loading: logits move by "
          f"{moved:.3e} of the largest: {'ok (honoured)' if moved > 1e-3 else 'FAIL (ignored?)'}",
          flush=True)
    ok &= moved > 1e-3
    return ok


def check_qwen_model(model, config: dict) -> bool:
    """What transformers made of a qwen3_5_moe_text config.json (see the module docstring)."""
    c = model.config
    rp = config["rope_parameters"]
    kept = dict(c.rope_parameters)
    print(f"qwen3_5_moe_text config as loaded: layer_types {list(c.layer_types)}, head_dim "
          f"{c.head_dim}, num_key_value_heads {c.num_key_value_heads}, linear heads "
          f"{c.linear_num_key_heads} x {c.linear_key_head_dim} / {c.linear_num_value_heads} x "
          f"{c.linear_value_head_dim}, conv {c.linear_conv_kernel_dim}, experts {c.num_experts} "
          f"top {c.num_experts_per_tok}, shared {c.shared_expert_intermediate_size}, "
          f"rope_parameters {kept}", flush=True)
    same = list(c.layer_types) == config["layer_types"]
    for k in ("head_dim", "num_key_value_heads", "linear_num_key_heads", "linear_key_head_dim",
              "linear_num_value_heads", "linear_value_head_dim", "linear_conv_kernel_dim",
              "num_experts", "num_experts_per_tok", "moe_intermediate_size",
              "shared_expert_intermediate_size"):
        if getattr(c, k) != config[k]:
            print(f"  loaded {k} = {getattr(c, k)!r}, config.json's {config[k]!r}")
            same = False
    for k, v in rp.items():
        if kept.get(k) != v:
            print(f"  loaded rope_parameters[{k!r}] = {kept.get(k, 'absent')!r}, config.json's {v!r}")
            same = False
    for l, t in enumerate(config["layer_types"]):
        layer = model.model.layers[l]
        built = "linear_attention" if hasattr(layer, "linear_attn") else "full_attention"
        if built != t:
            print(f"  layer {l} built as {built}, layer_types says {t}")
            same = False
    print(f"qwen3_5_moe_text config fields as config.json's: {'ok' if same else 'FAIL'}", flush=True)

    # Partial RoPE: the rotated width and its frequencies; the softmax scale.
    hd = config["head_dim"]
    rot = int(hd * rp["partial_rotary_factor"])
    rotary = model.model.rotary_emb
    inv_hf = rotary.inv_freq.double()
    j = torch.arange(rot // 2, dtype=torch.float64)
    inv_ref = float(rp["rope_theta"]) ** (-2.0 * j / rot)
    e_inv = float(((inv_hf - inv_ref).abs() / inv_ref).max()) if inv_hf.shape == inv_ref.shape else float("inf")
    full = [l for l, t in enumerate(config["layer_types"]) if t == "full_attention"]
    scale = model.model.layers[full[0]].self_attn.scaling if full else hd ** -0.5
    rope_ok = (inv_hf.shape == inv_ref.shape and e_inv < 1e-6 and rotary.attention_scaling == 1.0
               and abs(scale - hd ** -0.5) < 1e-12)
    print(f"RoPE ({rotary.rope_type}): {inv_hf.numel()} inverse frequencies (rot {rot} = "
          f"int({hd} x {rp['partial_rotary_factor']}) needs {rot // 2}), vs theta^(-2j/rot) "
          f"{e_inv:.1e} relative, attention scaling {rotary.attention_scaling}, softmax scale "
          f"{scale:.9f} vs {hd ** -0.5:.9f}: {'ok' if rope_ok else 'FAIL'}", flush=True)
    return same and rope_ok


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
    ap.add_argument("--prompt", default="The ", help="greedy continuation's prompt")
    ap.add_argument("--max-tokens", type=int, default=100, help="greedy continuation's length")
    ap.add_argument("--work", help="where the export and logits go (default: a temporary directory)")
    a = ap.parse_args()

    import transformers
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DeepseekV3ForCausalLM,
                              Glm4MoeForCausalLM)
    from transformers.models.deepseek_v3 import modeling_deepseek_v3
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
    deepseek = config["model_type"] == "deepseek_v3"
    qwen = config["model_type"] == "qwen3_5_moe_text"
    assert deepseek or qwen or config["model_type"] == "glm4_moe", config["model_type"]
    V, L = config["vocab_size"], config["num_hidden_layers"]
    D = config["mtp_num_hidden_layers"] if qwen else config["num_nextn_predict_layers"]
    tokens = torch.from_numpy(np.fromfile(tokens_file, dtype=np.int32).astype(np.int64)).view(a.batch, a.seq)
    theirs = np.fromfile(logits_file, dtype=np.float32).reshape(a.batch * a.seq, V)

    cls = (AutoModelForCausalLM if qwen else DeepseekV3ForCausalLM if deepseek
           else Glm4MoeForCausalLM)
    model, info = cls.from_pretrained(hf, dtype=torch.float32, attn_implementation="eager",
                                      output_loading_info=True)
    model.eval()
    if qwen:
        from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
        assert type(model) is modeling_qwen3_5_moe.Qwen3_5MoeForCausalLM, type(model)
    elif deepseek:
        assert type(model) is modeling_deepseek_v3.DeepseekV3ForCausalLM, type(model)
    else:
        assert type(model) is modeling_glm4_moe.Glm4MoeForCausalLM, type(model)
        assert model.config.rope_parameters["partial_rotary_factor"] == 1.0, model.config.rope_parameters
    # Loading: every weight found; the unexpected ones are the MTP layers' (loaded below; for
    # qwen3_5_moe_text mtp.*, which transformers ignores and may not list at all).
    if qwen:
        mtp_key = re.compile(r"mtp\.") if D else None
        where = "mtp.*"
    else:
        mtp_key = re.compile(rf"model\.layers\.({'|'.join(str(L + k) for k in range(D))})\.") if D else None
        where = f"the MTP layers {L}..{L + D - 1}"
    unexpected = sorted(info.get("unexpected_keys", []))
    stray = [k for k in unexpected if not (mtp_key and mtp_key.match(k))]
    bad = {k: v for k, v in info.items() if k != "unexpected_keys" and v}
    load_ok = not stray and not bad
    print(f"loading: {len(unexpected)} unexpected keys (all in {where}: "
          f"{not stray}), other loading info {bad or 'empty'}: {'ok' if load_ok else 'FAIL'}", flush=True)
    if stray:
        print(f"  unexpected outside the MTP layers: {stray[:8]}")
    with torch.no_grad():
        out = model(input_ids=tokens, output_hidden_states=True)
    mine = out.logits.reshape(-1, V).float().numpy()
    ok = compare(f"main head, transformers {cls.__name__} vs moetron ({a.dtype} export)",
                 mine, theirs, a.rtol)
    ok &= load_ok
    if deepseek:
        ok &= check_deepseek_model(model, config, tokens, mine)
    if qwen:
        ok &= check_qwen_model(model, config)

    # The tokenizer (byte-level tokenizer.json) through AutoTokenizer.
    if os.path.exists(os.path.join(hf, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained(hf)
        text = "GLM-4.5 export: naïve café, 日本語, \x00\xff\n"
        ids = tok.encode(text)
        same = ids == list(text.encode("utf-8")) and tok.decode(ids) == text
        print(f"tokenizer: {type(tok).__name__}, encode = UTF-8 bytes and decode round trip: "
              f"{'ok' if same else 'FAIL'}")
        ok &= same

        # Greedy continuation: moetron generate vs transformers' generate, token for token.
        prompt = list(a.prompt.encode("utf-8"))
        gen_cmd = [a.moetron, "generate", a.checkpoint, "--prompt", a.prompt, "--max-tokens",
                   str(a.max_tokens)] + (["--tokenizer", a.dataset] if a.dataset else [])
        moetron_ids = list(run_bytes(gen_cmd))
        if len(moetron_ids) == a.max_tokens + 1 and moetron_ids[-1] == ord("\n"):
            moetron_ids.pop()  # the newline generate adds when the text does not end with one
        with torch.no_grad():
            gen = model.generate(input_ids=torch.tensor([prompt]),
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=a.max_tokens,
                                 do_sample=False, num_beams=1)
        hf_ids = gen[0, len(prompt):].tolist()
        first = next((i for i, (x, y) in enumerate(zip(hf_ids, moetron_ids)) if x != y),
                     None if len(hf_ids) == len(moetron_ids) else min(len(hf_ids), len(moetron_ids)))
        same = first is None and len(hf_ids) == a.max_tokens
        print(f"greedy continuation of {a.prompt!r}, {a.max_tokens} tokens: moetron generate "
              f"{bytes(moetron_ids)!r}", flush=True)
        # A bf16 export decodes with rounded weights, moetron with the checkpoint's: reported only.
        verdict = "identical" if same else f"first difference at token {first}"
        verdict += (": ok" if same else ": FAIL") if a.dtype == "fp32" else " (bf16 export: not checked)"
        print(f"  transformers generate(do_sample=False) {bytes(hf_ids)!r}: {verdict}", flush=True)
        if a.dtype == "fp32":
            ok &= same
    else:
        print("greedy continuation: skipped (not the byte tokenizer)")

    # MTP: transformers' MtpModel on the exported layers L..L+D-1 vs the PyTorch reference.
    if D > 0 and qwen:
        print(f"MTP module (mtp.*, {D}): not checked (transformers has no MTP for "
              "qwen3_5_moe_text and drops mtp.* on load)", flush=True)
    elif D > 0:
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
        if deepseek:
            from check_export import deepseek_reference_config
            cfg = deepseek_reference_config(config)
        else:
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
