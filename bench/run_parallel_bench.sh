#!/usr/bin/env bash
# The parallel benchmark: one config on one rank with every core, then on 2 ranks (one core
# each) in several layouts, all in one run. Prints one JSON object: per layout the tokens/s, its
# ratio to the one-rank run, each group's bytes per step next to the formula of
# docs/parallelism.md (and their ratio), the communication share of the step time and the share
# of the gradient reduction hidden behind backward.
#
#   bench/run_parallel_bench.sh [CONFIG] [--steps N] [--warmup-steps N]   (default configs/bench-cpu.pbtxt)
#
# Needs a build (launch/test.sh makes one in build/; BUILD_DIR overrides). Run nothing else
# meanwhile: the ranks each own a core.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/bench-cpu.pbtxt}
shift || true
steps=5 warmup=2
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup-steps) warmup=$2; shift 2 ;;
    *) echo "run_parallel_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
bench=${BUILD_DIR:-build}/bench/moetron_bench
[ -x "$bench" ] || { echo "run_parallel_bench.sh: $bench not found: build first (launch/test.sh)" >&2; exit 1; }
cores=$(nproc)
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$bench" "$config" --steps "$steps" --warmup-steps "$warmup" --set threads="$cores" > "$out/1.json"
layouts=("dp2:" "dp2-zero1:--set parallel.zero1=true" "dp2-ep2:--set parallel.ep=2"
         "tp2:--set parallel.tp=2" "tp2-ep2:--set parallel.tp=2 --set parallel.ep=2")
names=()
for spec in "${layouts[@]}"; do
  name=${spec%%:*}
  # shellcheck disable=SC2086
  mpirun "${root[@]}" -np 2 --bind-to core "$bench" "$config" --steps "$steps" \
    --warmup-steps "$warmup" --set threads=1 ${spec#*:} > "$out/$name.json"
  names+=("$name")
done

/usr/bin/python3 - "$config" "$out" "${names[@]}" <<'PY'
import json, sys
config, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
base = json.load(open(f"{out}/1.json"))
result = {"config": config, "one_rank": {"threads": base["threads"],
          "tokens_per_s": round(base["tokens_per_s"], 1), "mfu": round(base["mfu"], 4)},
          "layouts": {}}
for name in names:
    j = json.load(open(f"{out}/{name}.json"))
    groups = {}
    for g in ("world", "dp", "edp", "tp", "ep"):
        key = f"comm.{g}.bytes_per_step"
        if key not in j:
            continue
        measured, expected = j[key], j[f"comm.{g}.expected_bytes_per_step"]
        entry = {"bytes_per_step": round(measured), "expected": round(expected),
                 "ratio": round(measured / expected, 4) if expected else None,
                 "seconds_per_step": round(j[f"comm.{g}.seconds_per_step"], 4)}
        if g == "ep":
            entry["expected_at_measured_routing"] = round(j["comm.ep.expected_bytes_at_measured_routing"])
            entry["routed_rows_off_rank"] = round(j["routed_rows_off_rank"], 4)
        groups[g] = entry
    result["layouts"][name] = {
        "layout": j["layout"], "tokens_per_s": round(j["tokens_per_s"], 1),
        "vs_one_rank": round(j["tokens_per_s"] / base["tokens_per_s"], 3),
        "mfu": round(j["mfu"], 4), "comm_share": round(j["comm_share"], 4),
        "grad_sync_hidden_share": None if j.get("grad_sync_hidden_share") is None
                                  else round(j["grad_sync_hidden_share"], 3),
        "groups": groups}
print(json.dumps(result, indent=2))
PY
