#!/usr/bin/env bash
# Configures and builds moetron in build/ (Release). Extra arguments go to cmake --build,
# e.g. `launch/build.sh --target moetron`. BUILD_DIR and JOBS override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "${JOBS:-2}" "$@"
