#!/usr/bin/env bash
# CPU training benchmark: moetron and the PyTorch reference on the same config, in the same run,
# at the same thread count, each in fp32 and in bf16. The reference runs under two PyTorch peers:
# Debian's python3-torch (1.13, OpenBLAS) and, when bench/setup_torch_venv.sh has made its venv,
# current PyTorch from PyPI (2.x, MKL + oneDNN); its bf16 is torch.autocast (--autocast-bf16),
# moetron's precision=BF16. Prints one JSON object: each side's tokens/s and MFU (against the
# GEMM peak of its precision, which moetron_bench measures with a large square oneDNN GEMM on all
# threads), moetron's speedup against each peer at the same precision, and "speedup": the faster
# moetron against the strongest (fastest) of all peer measurements.
#
#   bench/run_bench.sh [CONFIG] [--steps N] [--warmup-steps N]     (default configs/bench-cpu.pbtxt)
#
# Needs a build (launch/test.sh or launch/demo.sh makes one in build/); BUILD_DIR overrides.
# TORCH_VENV: the PyPI peer's venv (default bench/.venv-torch, relative to the repository root).
#
# A config whose layers are MLA (model.layer_types, model.mla) makes the reference build the same
# MLA model (torch_reference.py --layer-types MLA --mla-...). moetron_bench's JSON carries the
# MLA settings when it has a layer_types field; until then they are read from CONFIG itself
# (bench/config_text.py), and the output's "mla" block says which ("source").
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/bench-cpu.pbtxt
case "${1:-}" in --*|"") ;; *) config=$1; shift ;; esac
steps=5 warmup=2
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup-steps) warmup=$2; shift 2 ;;
    *) echo "run_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-build}
venv=${TORCH_VENV:-bench/.venv-torch}
bench="$build/bench/moetron_bench"
[ -x "$bench" ] || { echo "run_bench.sh: $bench not found: build first (launch/test.sh)" >&2; exit 1; }

ours=$("$bench" "$config" --steps "$steps" --warmup-steps "$warmup")
ours_bf16=$("$bench" "$config" --steps "$steps" --warmup-steps "$warmup" \
  --set precision=BF16)
ref_args=$(/usr/bin/python3 -c '
import json, sys
sys.path.insert(0, "bench")
j = json.loads(sys.argv[1])
a = ["--vocab", j["vocab"], "--hidden", j["hidden"], "--layers", j["layers"], "--heads", j["heads"],
     "--kv-heads", j["kv_heads"], "--intermediate", j["intermediate"], "--seq", j["seq"],
     "--batch", j["batch"], "--mtp-depth", j["mtp_depth"], "--mtp-loss-weight", j["mtp_loss_weight"],
     "--rope-style", j["rope_style"], "--threads", j["threads"], "--lr", j["lr"],
     "--weight-decay", j["weight_decay"], "--grad-clip", j["grad_clip"], "--init-std", j["init_std"]]
if j["tie_embeddings"] == "true": a.append("--tie-embeddings")
if j["n_routed_experts"] > 0:
    for key in ("n_routed_experts", "experts_per_tok", "moe_intermediate", "n_shared_experts",
                "first_k_dense", "routed_scaling", "scoring_func", "norm_topk_prob", "n_group",
                "topk_group", "bias_update_speed", "seq_aux_alpha", "aux_loss_coeff",
                "z_loss_coeff", "capacity_factor"):
        a += ["--" + key.replace("_", "-"), j[key]]
mla_keys = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
if "layer_types" in j:  # moetron_bench reports every block mixer, comma-separated
    kinds = set(j["layer_types"].split(","))
    if "MLA" in kinds and kinds != {"MLA"}:
        sys.exit("run_bench.sh: layer_types %s: the reference builds all-MLA or all-ATTENTION models" % j["layer_types"])
    mla = {k: j["mla." + k] for k in mla_keys} if "MLA" in kinds else None
else:  # not in the JSON: from the config file
    import config_text
    try:
        found = config_text.mla_settings(sys.argv[2])
    except (config_text.ConfigError, OSError, ValueError) as e:
        sys.exit("run_bench.sh: %s: %s" % (sys.argv[2], e))
    mla = found["mla"] if found else None
if mla:
    a += ["--layer-types", "MLA"]
    for key in mla_keys:
        a += ["--mla-" + key.replace("_", "-"), mla[key]]
print(" ".join(str(x) for x in a))' "$ours" "$config")
# Give the reference its best: this machine pins OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for safety,
# which slows OpenBLAS; unset them for the reference commands only.
reference() {  # PYTHON [--autocast-bf16]
  local python=$1; shift
  # shellcheck disable=SC2086
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" bench/torch_reference.py \
    $ref_args --steps "$steps" --warmup-steps "$warmup" "$@"
}
debian=$(reference /usr/bin/python3)
debian_bf16=$(reference /usr/bin/python3 --autocast-bf16)
pypi="" pypi_bf16="" pypi_source=""
if [ -e "$venv" ]; then
  [ -x "$venv/bin/python" ] || { echo "run_bench.sh: $venv has no bin/python: rerun bench/setup_torch_venv.sh or remove it" >&2; exit 1; }
  pypi=$(reference "$venv/bin/python") || {
    echo "run_bench.sh: the PyPI peer in $venv failed: rerun bench/setup_torch_venv.sh or remove it" >&2; exit 1; }
  pypi_bf16=$(reference "$venv/bin/python" --autocast-bf16) || {
    echo "run_bench.sh: the PyPI peer in $venv failed with --autocast-bf16" >&2; exit 1; }
  if [ -f "$venv/moetron-torch-source" ]; then pypi_source=$(cat "$venv/moetron-torch-source"); fi
fi

/usr/bin/python3 - "$config" "$ours" "$ours_bf16" "$debian" "$debian_bf16" "$pypi" "$pypi_bf16" \
  "$venv" "$pypi_source" <<'PY'
import json, sys
config, venv, source = sys.argv[1], sys.argv[8], sys.argv[9]
ours, ours_bf16 = json.loads(sys.argv[2]), json.loads(sys.argv[3])
# Each peak from the moetron_bench run that uses it (both runs measure both).
peak = {"fp32": ours["gemm_peak_gflops"], "bf16": ours_bf16["gemm_peak_bf16_gflops"]}
flops = ours["train_flops_per_token"]
if ours_bf16["precision"] != "bf16" or ours["precision"] != "f32":
    sys.exit("run_bench.sh: moetron_bench ran in %s and %s, not f32 and bf16"
             % (ours.get("precision"), ours_bf16.get("precision")))
if ours_bf16["train_flops_per_token"] != flops or ours_bf16["params"] != ours["params"]:
    sys.exit("run_bench.sh: the fp32 and bf16 moetron_bench runs built different models")

def moetron(j):  # its mfu is against the peak of its precision
    return {k: j[k] for k in ("tokens_per_s", "mfu", "precision", "achieved_gflops",
                              "gemm_backend", "comm_bytes", "params", "loss_first", "loss_last")}

def peer(raw, python, ours_block):
    t = json.loads(raw)
    block = {"measured": True, "python": python, "precision": t.get("precision", "fp32")}
    block.update({k: t.get(k) for k in ("tokens_per_s", "torch_version", "blas", "mkl", "onednn",
                                         "cpu_capability", "openblas_core", "params",
                                         "loss_first", "loss_last")})
    block["mfu"] = t["tokens_per_s"] * flops / (
        peak["bf16" if block["precision"] == "bf16-autocast" else "fp32"] * 1e9)
    block["speedup"] = ours_block["tokens_per_s"] / t["tokens_per_s"]
    return block

out = {
    "config": config,
    "threads": ours["threads"],
    "gemm_peak_gflops": round(peak["fp32"], 1),
    "gemm_peak_bf16_gflops": round(peak["bf16"], 1),
    "gemm_bf16": ours_bf16.get("gemm_bf16"),
    "train_flops_per_token": flops,
    "moetron": moetron(ours),
    "moetron_bf16": moetron(ours_bf16),
}
out["pytorch_debian"] = peer(sys.argv[4], "/usr/bin/python3", out["moetron"])
out["pytorch_debian_bf16"] = peer(sys.argv[5], "/usr/bin/python3", out["moetron_bf16"])
if sys.argv[6]:
    out["pytorch_pypi"] = peer(sys.argv[6], venv + "/bin/python", out["moetron"])
    out["pytorch_pypi_bf16"] = peer(sys.argv[7], venv + "/bin/python", out["moetron_bf16"])
    if source:
        out["pytorch_pypi"]["source"] = out["pytorch_pypi_bf16"]["source"] = source
else:
    for key in ("pytorch_pypi", "pytorch_pypi_bf16"):
        out[key] = {"measured": False,
                    "why": f"no venv at {venv}",
                    "how": "bench/setup_torch_venv.sh creates it (current torch from PyPI, "
                           "several GB), then rerun this bench"}
peers = [k for k in ("pytorch_debian", "pytorch_debian_bf16", "pytorch_pypi", "pytorch_pypi_bf16")
         if "tokens_per_s" in out[k]]
best = max(peers, key=lambda k: out[k]["tokens_per_s"])
fastest = max(("moetron", "moetron_bf16"), key=lambda k: out[k]["tokens_per_s"])
out["strongest_peer"] = best
out["fastest_moetron"] = fastest
out["speedup"] = out[fastest]["tokens_per_s"] / out[best]["tokens_per_s"]
out["bf16_over_fp32"] = out["moetron_bf16"]["tokens_per_s"] / out["moetron"]["tokens_per_s"]
mla = json.loads(sys.argv[4]).get("mla")  # what the reference built (only with MLA layers)
if mla:
    out["layer_types"] = "MLA"
    out["mla"] = dict(mla, source="moetron_bench JSON" if "layer_types" in ours else
                      "config file (moetron_bench reports no MLA fields)")
print(json.dumps(out, indent=2))
PY
