#!/usr/bin/env bash
# Load-balancing fidelity study (docs/moe-fidelity.md): the same MoE model, data, seed and token
# budget trained four ways, then the main head's final validation loss and MaxVio over training.
#   (a) no balancing      (b) batch aux loss, coefficient 0.01
#   (c) aux-loss-free, gamma 0.001      (d) (c) plus one MTP module (a-c have none)
#
#   bench/fidelity_study.sh [STEPS]        (default 1500; results in runs/fidelity/)
#   SEED=7 bench/fidelity_study.sh         (another seed; results in runs/fidelity-seed7/)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1500}
build=${BUILD_DIR:-build}
moetron="$build/trainer/moetron"
[ -x "$moetron" ] || { echo "fidelity_study.sh: $moetron not found: build first (launch/build.sh)" >&2; exit 1; }
if [ ! -f data/prepared/fortunes/manifest.json ]; then
  "$moetron" prepare --fortunes --input /usr/share/games/fortunes --output data/prepared/fortunes
fi
out=runs/fidelity${SEED:+-seed$SEED}
mkdir -p "$out"
common=(--set schedule.total_steps="$steps" --set model.num_nextn_predict_layers=0
        --set seed="${SEED:-1234}"
        --set model.moe.bias_update_speed=0 --set logging.val_interval=250 --set logging.val_batches=16)
run() {  # name, extra --set arguments
  local name=$1; shift
  echo "== $name"
  "$moetron" train configs/tiny.pbtxt "${common[@]}" --set logging.run_dir="$out/$name" "$@" | tail -2
}
run a_none
run b_aux_loss --set model.moe.aux_loss_coeff=0.01
run c_loss_free --set model.moe.bias_update_speed=0.001
run d_loss_free_mtp --set model.moe.bias_update_speed=0.001 --set model.num_nextn_predict_layers=1

/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name in ("a_none", "b_aux_loss", "c_loss_free", "d_loss_free_mtp"):
    recs = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
    train = [r for r in recs if r["kind"] == "train"]
    val = [r for r in recs if r["kind"] == "val"]
    # MaxVio_batch of each MoE layer and step, averaged over the layers.
    per_step = []
    for r in train:
        v = [r[k] for k in r if k.startswith("moe.") and k.endswith(".max_violation")]
        per_step.append(sum(v) / len(v))
    tail = per_step[-max(1, len(per_step) // 10):]
    rows.append({"run": name, "final_val_loss": val[-1]["val_loss"],
                 "maxvio_mean": sum(per_step) / len(per_step),
                 "maxvio_last10pct": sum(tail) / len(tail),
                 "maxvio_worst_layer_last10pct": max(
                     sum(r[k] for r in train[-len(tail):]) / len(tail)
                     for k in train[-1] if k.endswith(".max_violation") and k.startswith("moe.")),
                 "steps": len(train)})
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=2)
print("| run | final val loss (main head) | MaxVio mean over training | MaxVio last 10% | worst layer, last 10% |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['run']} | {r['final_val_loss']:.4f} | {r['maxvio_mean']:.3f} | {r['maxvio_last10pct']:.3f} | {r['maxvio_worst_layer_last10pct']:.3f} |")
PY
for name in a_none b_aux_loss c_loss_free d_loss_free_mtp; do
  /usr/bin/python3 bench/plot_expert_load.py "$out/$name/metrics.jsonl" >/dev/null
done
echo "expert-load heatmaps: $out/*/expert_load.png"
