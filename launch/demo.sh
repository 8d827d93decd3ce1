#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained model: installs the packages, builds,
# prepares the embedded dataset (the English `fortunes` files, byte tokenizer) and trains
# configs/tiny.pbtxt on the CPU (checkpointing into runs/tiny/checkpoints), then lets the trained
# model write a few lines (moetron generate, sampled, and greedy with MTP speculative decoding).
# Extra arguments go to `moetron train`, e.g. --set schedule.total_steps=200. The demo replaces
# its own earlier output in runs/tiny (--overwrite; docs/runs.md).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh --target moetron
build=${BUILD_DIR:-build}
dataset=data/prepared/fortunes
if [ ! -f "$dataset/manifest.json" ]; then
  "$build/trainer/moetron" prepare --fortunes --input /usr/share/games/fortunes --output "$dataset"
fi
"$build/trainer/moetron" train configs/tiny.pbtxt --overwrite "$@"
echo; echo "== what the model writes (moetron generate; docs/generate.md) =="
for prompt in "You will " "Love " "It is "; do
  "$build/trainer/moetron" generate runs/tiny --prompt "$prompt" --max-tokens 100 \
    --temperature 0.7 --top-p 0.9 --seed 1 --echo 2>/dev/null
done
"$build/trainer/moetron" generate runs/tiny --prompt "The " --max-tokens 100 --speculative mtp
