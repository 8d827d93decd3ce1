#!/usr/bin/env bash
# Checkpoint save and load speed, next to what dd writes to the same disk, and the memory a save
# needs beyond the model's. Trains CONFIG for one step (one rank with every core, then 2 ranks
# with ep 2 under mpirun), saves its state (weights, AdamW moments) three times to DIR, loads it
# back, then writes the same number of bytes with `dd conv=fdatasync` into DIR. Prints JSON.
#
#   bench/run_checkpoint_bench.sh [CONFIG] [DIR]    (default configs/bench-cpu.pbtxt, runs/checkpoint-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/bench-cpu.pbtxt}
dir=${2:-runs/checkpoint-bench}
bench=${BUILD_DIR:-build}/bench/moetron_bench
[ -x "$bench" ] || { echo "run_checkpoint_bench.sh: $bench not found: build first" >&2; exit 1; }
mkdir -p "$dir"
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
one=$("$bench" "$config" --steps 1 --warmup-steps 0 --checkpoint "$dir")
two=$(mpirun "${root[@]}" -np 2 --bind-to core "$bench" "$config" --steps 1 --warmup-steps 0 \
      --set threads=1 --set parallel.ep=2 --checkpoint "$dir")
bytes=$(/usr/bin/python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["checkpoint_bytes"]))' "$one")
mb=$(( (bytes + 1048575) / 1048576 ))
dd_out=$(dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$mb" conv=fdatasync 2>&1 | tail -1)
rm -f "$dir/dd.bin"
/usr/bin/python3 - "$config" "$dir" "$one" "$two" "$dd_out" "$mb" <<'PY'
import json, re, sys
config, dir_, one, two, dd_out, mb = sys.argv[1:]
m = re.search(r"([\d.]+) s, ([\d.]+) ([kMG]?B)/s", dd_out)
seconds = float(m.group(1))
dd_mb_s = int(mb) * 1048576 / seconds / 1e6
def side(j):
    j = json.loads(j)
    return {"layout": j["layout"], "bytes": int(j["checkpoint_bytes"]),
            "save_s": round(j["checkpoint_save_s"], 3), "load_s": round(j["checkpoint_load_s"], 3),
            "save_mb_per_s": round(j["checkpoint_save_mb_per_s"], 1),
            "load_mb_per_s": round(j["checkpoint_load_mb_per_s"], 1),
            "save_vs_dd": round(j["checkpoint_save_mb_per_s"] / dd_mb_s, 3),
            "save_extra_peak_mb_per_rank": round(j["checkpoint_save_extra_peak_mb_per_rank"], 1),
            "model_state_mb_per_rank": round(j["model_state_mb_per_rank"], 1)}
print(json.dumps({"config": config, "dir": dir_, "dd_mb_per_s": round(dd_mb_s, 1),
                  "dd": dd_out, "one_rank": side(one), "two_ranks": side(two)}, indent=2))
PY
