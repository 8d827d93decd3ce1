#!/usr/bin/env bash
# CPU training benchmark: moetron and the PyTorch reference on the same config, in the same run,
# at the same thread count. Prints one JSON object: each side's tokens/s and MFU (against the
# GEMM peak moetron_bench measures with a large square oneDNN sgemm on all threads), and the ratio.
#
#   bench/run_bench.sh [CONFIG] [--steps N] [--warmup-steps N]     (default configs/bench-cpu.pbtxt)
#
# Needs a build (launch/test.sh or launch/demo.sh makes one in build/); BUILD_DIR overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/bench-cpu.pbtxt}
shift || true
steps=5 warmup=2
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup-steps) warmup=$2; shift 2 ;;
    *) echo "run_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-build}
bench="$build/bench/moetron_bench"
[ -x "$bench" ] || { echo "run_bench.sh: $bench not found: build first (launch/test.sh)" >&2; exit 1; }

ours=$("$bench" "$config" --steps "$steps" --warmup-steps "$warmup")
# Give the reference its best: this machine pins OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for safety,
# which slows OpenBLAS; unset them for this one command only.
ref_args=$(/usr/bin/python3 -c '
import json, sys
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
print(" ".join(str(x) for x in a))' "$ours")
# shellcheck disable=SC2086
theirs=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/torch_reference.py \
  $ref_args --steps "$steps" --warmup-steps "$warmup")

/usr/bin/python3 - "$config" "$ours" "$theirs" <<'PY'
import json, sys
config, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
peak = ours["gemm_peak_gflops"]
flops = ours["train_flops_per_token"]
theirs["mfu"] = theirs["tokens_per_s"] * flops / (peak * 1e9)
print(json.dumps({
    "config": config,
    "threads": ours["threads"],
    "gemm_peak_gflops": round(peak, 1),
    "train_flops_per_token": flops,
    "moetron": {k: ours[k] for k in ("tokens_per_s", "mfu", "achieved_gflops", "gemm_backend",
                                     "comm_bytes", "params", "loss_first", "loss_last")},
    "pytorch": {k: theirs.get(k) for k in ("tokens_per_s", "mfu", "torch_version", "blas",
                                           "openblas_core", "params", "loss_first", "loss_last")},
    "speedup": ours["tokens_per_s"] / theirs["tokens_per_s"],
}, indent=2))
PY
