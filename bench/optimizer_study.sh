#!/usr/bin/env bash
# Optimizer study (docs/optimizers.md): the same model (configs/kimi-k2-tiny.pbtxt: MLA + MoE),
# data, seed, schedule and token budget trained with AdamW and with Muon (+ QK-clip at tau 100,
# Kimi K2's MuonClip), the validation loss every 100 steps, then the curves side by side and the
# tokens each needs to reach the other's final loss.
#
#   bench/optimizer_study.sh [STEPS]        (default 1500; results in runs/optimizers/)
#   SEED=7 bench/optimizer_study.sh         (another seed; runs/optimizers-seed7/)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
build=${BUILD_DIR:-build}
moetron="$build/trainer/moetron"
[ -x "$moetron" ] || { echo "optimizer_study.sh: $moetron not found: build first (launch/build.sh)" >&2; exit 1; }
if [ ! -f data/prepared/fortunes/manifest.json ]; then
  "$moetron" prepare --fortunes --input /usr/share/games/fortunes --output data/prepared/fortunes
fi
out=runs/optimizers${SEED:+-seed$SEED}
mkdir -p "$out"
common=(--set schedule.total_steps="$steps" --set seed="${SEED:-1234}"
        --set logging.val_interval=100 --set logging.val_batches=16 --overwrite)
run() {  # name, extra --set arguments
  local name=$1; shift
  echo "== $name"
  "$moetron" train configs/kimi-k2-tiny.pbtxt "${common[@]}" --set logging.run_dir="$out/$name" "$@" | tail -2
}
run adamw --set optimizer.kind=ADAMW
run muon --set optimizer.kind=MUON

/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
curves = {}
for name in ("adamw", "muon"):
    recs = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
    curves[name] = [(r["step"], r["val_loss"]) for r in recs if r["kind"] == "val"]
tokens_per_step = 8 * 128
def steps_to_reach(curve, target):
    for step, loss in curve:
        if loss <= target:
            return step
    return None
final = {n: c[-1][1] for n, c in curves.items()}
summary = {"tokens_per_step": tokens_per_step, "curves": curves, "final_val_loss": final,
           "adamw_final_reached_by_muon_at_step": steps_to_reach(curves["muon"], final["adamw"])}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print("| step | tokens | AdamW val loss | Muon + QK-clip val loss |")
print("| --- | --- | --- | --- |")
for (s, a), (_, m) in zip(curves["adamw"], curves["muon"]):
    print(f"| {s} | {s * tokens_per_step} | {a:.4f} | {m:.4f} |")
r = summary["adamw_final_reached_by_muon_at_step"]
print(f"\nMuon reaches AdamW's final {final['adamw']:.4f} at step {r} "
      f"({'%.2fx fewer tokens' % (curves['adamw'][-1][0] / r) if r else 'not within the run'})")
PY
