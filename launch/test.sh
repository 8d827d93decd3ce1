#!/usr/bin/env bash
# Installs the packages, builds everything and runs every test (CTest, 2 jobs).
# CUDA tests skip with a message when no GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j 2
