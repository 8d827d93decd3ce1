#!/usr/bin/env bash
# launch/gpu_per_rank.sh under mpirun: each local rank sees its own GPU, its entry of a given
# list, and more ranks than listed GPUs are refused with the reason.
set -euo pipefail
mpirun=$1
wrap=$2
run() { "$mpirun" --oversubscribe --allow-run-as-root "$@"; }
got=$(run -np 3 "$wrap" sh -c 'echo "$OMPI_COMM_WORLD_LOCAL_RANK=$CUDA_VISIBLE_DEVICES"' | sort | tr '\n' ' ')
[[ "$got" == "0=0 1=1 2=2 " ]] || { echo "without a list: $got"; exit 1; }
got=$(CUDA_VISIBLE_DEVICES=4,6 run -x CUDA_VISIBLE_DEVICES -np 2 "$wrap" sh -c \
  'echo "$OMPI_COMM_WORLD_LOCAL_RANK=$CUDA_VISIBLE_DEVICES"' | sort | tr '\n' ' ')
[[ "$got" == "0=4 1=6 " ]] || { echo "with CUDA_VISIBLE_DEVICES=4,6: $got"; exit 1; }
if out=$(OMPI_COMM_WORLD_LOCAL_RANK=2 CUDA_VISIBLE_DEVICES=4,6 "$wrap" true 2>&1); then
  echo "a third rank on two GPUs was accepted"
  exit 1
fi
[[ "$out" == *"local rank 2, but CUDA_VISIBLE_DEVICES lists 2 GPUs (4,6)"* ]] || { echo "$out"; exit 1; }
echo "gpu_per_rank.sh: pass"
