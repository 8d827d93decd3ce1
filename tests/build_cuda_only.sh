#!/usr/bin/env bash
# CTest BuildModes.CudaOnly: the CUDA-only build mode (what launch/gpu_check.sh builds on a GPU
# machine) configures and builds from this tree, and its driver runs: exit 0 (checks passed)
# or 2 (no GPU visible) is a pass, 1 (a check failed) is not.
#   tests/build_cuda_only.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
# Without cuDNN's attention: the main build compiles those sources already, and here they would
# add 40 s to every CI run (launch/gpu_check.sh builds them on the GPU machine). Unoptimised host
# code (build type None; nvcc optimises the device code either way): what this test checks is
# that the mode configures, compiles and links.
cmake -S "$src" -B "$build" -DMOETRON_CUDA_ONLY=ON -DMOETRON_CUDNN=OFF -DCMAKE_BUILD_TYPE=None \
  > "$build.configure.log"
# The driver alone: the mode's core and op harness (the same sources the main build compiles)
# are built by launch/gpu_check.sh, and here would add 20 s of CPU to every CI run.
cmake --build "$build" -j 2 --target moetron_gpu_check > "$build.build.log"
status=0
"$build/moetron_gpu_check" --small || status=$?
[[ $status -eq 0 || $status -eq 2 ]]
