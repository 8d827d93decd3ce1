#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained model: installs the packages, builds,
# prepares the embedded dataset (the English `fortunes` files, byte tokenizer) and trains
# configs/tiny.pbtxt on the CPU. Extra arguments go to `moetron train`, e.g. --set schedule.total_steps=200.
# The demo replaces its own earlier output in runs/tiny (--overwrite; docs/runs.md).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh --target moetron
build=${BUILD_DIR:-build}
dataset=data/prepared/fortunes
if [ ! -f "$dataset/manifest.json" ]; then
  "$build/trainer/moetron" prepare --fortunes --input /usr/share/games/fortunes --output "$dataset"
fi
exec "$build/trainer/moetron" train configs/tiny.pbtxt --overwrite "$@"
