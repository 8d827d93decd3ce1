#!/usr/bin/env bash
# Runs a command with one GPU of its node: the local rank's (Open MPI's, Slurm's or MPICH's local
# rank variable), as the CUDA backend uses the first device it sees. Where CUDA_VISIBLE_DEVICES
# already lists the node's GPUs, the local rank takes its entry of that list.
#   mpirun -np 8 launch/gpu_per_rank.sh build/trainer/moetron train run.pbtxt
#   srun --ntasks-per-node 8 launch/gpu_per_rank.sh build/trainer/moetron train run.pbtxt
set -euo pipefail
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-${MPI_LOCALRANKID:-0}}}
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
  if ((local_rank >= ${#gpus[@]})); then
    echo "gpu_per_rank.sh: local rank $local_rank, but CUDA_VISIBLE_DEVICES lists" \
      "${#gpus[@]} GPUs ($CUDA_VISIBLE_DEVICES): start at most ${#gpus[@]} ranks per node" >&2
    exit 2
  fi
  export CUDA_VISIBLE_DEVICES=${gpus[$local_rank]}
else
  export CUDA_VISIBLE_DEVICES=$local_rank
fi
exec "$@"
