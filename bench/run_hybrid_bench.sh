#!/usr/bin/env bash
# CPU training benchmark of the Gated DeltaNet hybrid (Qwen3.5-style) against transformers' own
# Qwen3_5MoeForCausalLM (bench/transformers_peer.py), same model, batch, sequence, optimizer and
# thread count, in the same run. Prints one JSON object: each side's tokens/s and MFU (moetron's
# training FLOPs per token over the GEMM peak moetron_bench measures), moetron's speedup, both
# parameter counts and their difference.
#
#   bench/run_hybrid_bench.sh [CONFIG] [--steps N] [--warmup-steps N]
#                                            (default configs/bench-cpu-hybrid.pbtxt, 5 + 2)
#
# Needs a build (BUILD_DIR, default build/) and a Python with transformers >= 5 and torch
# (HF_VENV, default .cache/venv-transformers). HF_EXPERTS_IMPLEMENTATION, when set, is handed to
# the peer as transformers' experts_implementation (default: transformers' own choice).
# moetron_bench's JSON has no GDN, head_dim, partial-RoPE or AdamW beta/eps fields: they are read
# from CONFIG (bench/config_text.py --hybrid). Refuses what Qwen3_5MoeForCausalLM cannot build the
# same (its attention is always gated with q/k norms, its norms zero-centred, its router softmax
# top-k renormalised, every layer MoE with a gated shared expert, no MTP).
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/bench-cpu-hybrid.pbtxt
case "${1:-}" in --*|"") ;; *) config=$1; shift ;; esac
steps=5 warmup=2
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup-steps) warmup=$2; shift 2 ;;
    *) echo "run_hybrid_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-build}
venv=${HF_VENV:-.cache/venv-transformers}
bench="$build/bench/moetron_bench"
[ -x "$bench" ] || { echo "run_hybrid_bench.sh: $bench not found: build first" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { echo "run_hybrid_bench.sh: no $venv/bin/python (transformers >= 5)" >&2; exit 1; }

ours=$("$bench" "$config" --steps "$steps" --warmup-steps "$warmup")
peer_args=$(/usr/bin/python3 - "$ours" "$config" <<'PY'
import json, sys
sys.path.insert(0, "bench")
import config_text
j = json.loads(sys.argv[1])
try:
    c = config_text.hybrid_settings(sys.argv[2])
except (config_text.ConfigError, OSError, ValueError) as e:
    sys.exit("run_hybrid_bench.sh: %s: %s" % (sys.argv[2], e))
fixed = {"mtp_depth": 0, "rope_style": "rotate_half", "scoring_func": "softmax",
         "norm_topk_prob": 1, "first_k_dense": 0, "routed_scaling": 1.0, "n_group": 1,
         "bias_update_speed": 0.0, "seq_aux_alpha": 0.0, "aux_loss_coeff": 0.0,
         "z_loss_coeff": 0.0, "capacity_factor": 0.0}
bad = ["%s %s (needs %s)" % (k, j[k], v) for k, v in fixed.items() if j[k] != v]
bad += [k for k in ("attention_output_gate", "qk_norm", "zero_centered_norms", "shared_expert_gate")
        if not c[k]]
if j["n_routed_experts"] == 0 or j["n_shared_experts"] == 0:
    bad.append("routed and shared experts in every layer")
if bad:
    sys.exit("run_hybrid_bench.sh: Qwen3_5MoeForCausalLM cannot build this config: " + ", ".join(bad))
g, o = c["linear_attention"], c["optimizer"]
a = ["--vocab", j["vocab"], "--hidden", j["hidden"], "--layer-types", ",".join(c["layer_types"]),
     "--heads", j["heads"], "--kv-heads", j["kv_heads"], "--head-dim", c["head_dim"],
     "--partial-rotary-factor", c["partial_rotary_factor"], "--rope-theta", c["rope_theta"],
     "--rms-norm-eps", c["rms_norm_eps"], "--n-routed-experts", j["n_routed_experts"],
     "--experts-per-tok", j["experts_per_tok"], "--moe-intermediate", j["moe_intermediate"],
     "--n-shared-experts", j["n_shared_experts"], "--init-std", j["init_std"], "--seq", j["seq"],
     "--batch", j["batch"], "--lr", j["lr"], "--beta1", o["beta1"], "--beta2", o["beta2"],
     "--eps", o["eps"], "--weight-decay", j["weight_decay"], "--grad-clip", j["grad_clip"],
     "--threads", j["threads"]]
for k, v in g.items():
    a += ["--" + k.replace("_", "-"), v]
if j["tie_embeddings"] == "true": a.append("--tie-embeddings")
if o["decay_norms_and_embeddings"]: a.append("--decay-norms-and-embeddings")
print(" ".join(str(x) for x in a))
PY
)
extra=()
if [ -n "${HF_EXPERTS_IMPLEMENTATION:-}" ]; then extra=(--experts-implementation "$HF_EXPERTS_IMPLEMENTATION"); fi
# As run_bench.sh: the machine pins OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; unset them for the peer.
# shellcheck disable=SC2086
theirs=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$venv/bin/python" bench/transformers_peer.py \
  $peer_args "${extra[@]}" --steps "$steps" --warmup-steps "$warmup")

/usr/bin/python3 - "$config" "$ours" "$theirs" "$venv" <<'PY'
import json, sys
config, ours, hf, venv = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
peak, flops = ours["gemm_peak_gflops"], ours["train_flops_per_token"]
experts = ours["n_routed_experts"] * ours["layers"]  # moetron's router biases: buffers, not trained
out = {
    "config": config,
    "threads": ours["threads"],
    "gemm_peak_gflops": round(peak, 1),
    "train_flops_per_token": flops,
    "moetron": {k: ours[k] for k in ("tokens_per_s", "mfu", "achieved_gflops", "gemm_backend",
                                     "params", "loss_first", "loss_last")},
    "transformers": dict({k: hf[k] for k in (
        "model_class", "tokens_per_s", "params", "loss_first", "loss_last", "torch_version",
        "transformers_version", "attn_implementation", "experts_implementation", "gdn_kernels",
        "step_s")}, python=venv + "/bin/python",
        mfu=hf["tokens_per_s"] * flops / (peak * 1e9),
        speedup=ours["tokens_per_s"] / hf["tokens_per_s"]),
    "params": {"moetron": ours["params"], "transformers": hf["params"],
               "difference": ours["params"] - hf["params"],
               "moetron_router_biases": experts},
}
diff = out["params"]["difference"]
out["params"]["note"] = (
    "moetron's count includes its router biases (n_routed_experts x layers): buffers, not "
    "trained; transformers' router has none" if diff == experts else
    "unexplained: the difference is not moetron's %d router biases" % experts)
out["speedup"] = out["transformers"]["speedup"]
print(json.dumps(out, indent=2))
PY
