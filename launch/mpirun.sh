#!/usr/bin/env bash
# Runs `moetron train` on one node with mpirun: RANKS processes, THREADS compute threads each,
# each rank bound to its own THREADS cores so ranks never share a core (docs/parallelism.md).
#
#   launch/mpirun.sh -n RANKS [-t THREADS] CONFIG [moetron train arguments ...]
#   launch/mpirun.sh -n 4 configs/tiny.pbtxt --set parallel.ep=2 --set logging.run_dir=runs/ep2
#
# THREADS defaults to cores / RANKS (at least 1). RANKS x THREADS above the cores is refused
# unless MOETRON_OVERSUBSCRIBE=1 (then ranks share cores, unbound: correct, slow).
# Environment: BUILD_DIR (default build), MPIRUN (default mpirun), MPIRUN_ARGS (extra mpirun
# flags, e.g. "--mca btl self,vader"), MOETRON_OVERSUBSCRIBE. Open MPI's OMPI_MCA_* variables
# pass through. The layout comes from CONFIG's parallel block (dp 0 = RANKS / tp).
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="" threads=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) ranks=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[ -n "$ranks" ] && [ $# -ge 1 ] || { sed -n '5,6p' "$0" | sed 's/^# //' >&2; exit 2; }
cores=$(nproc)
[ -n "$threads" ] || threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
binary=${BUILD_DIR:-build}/trainer/moetron
[ -x "$binary" ] || { echo "mpirun.sh: $binary not found: build first (launch/build.sh)" >&2; exit 1; }

args=(-np "$ranks")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
if [ $(( ranks * threads )) -le "$cores" ]; then
  # Each rank on its own THREADS cores (its OpenMP threads stay there).
  args+=(--map-by "slot:PE=$threads" --bind-to core)
elif [ "${MOETRON_OVERSUBSCRIBE:-0}" = 1 ]; then
  args+=(--oversubscribe --bind-to none)
else
  echo "mpirun.sh: $ranks ranks x $threads threads = $(( ranks * threads )) > $cores cores;" \
       "lower -t, or set MOETRON_OVERSUBSCRIBE=1 to share cores" >&2
  exit 2
fi
# Signals go to the ranks, not to mpirun: a SIGTERM that mpirun itself receives (Open MPI 4.1)
# makes it exit with 1 whatever the ranks did, so a scheduler could not tell a preemption from a
# failure. Sent to the ranks on this node instead (one is enough: every rank stops after the same
# step, docs/runs.md), they stop with 143 (130 for SIGINT) and a checkpoint, and mpirun exits
# with that status; SIGUSR1 (save now) is passed on the same way.
# shellcheck disable=SC2086
"${MPIRUN:-mpirun}" "${args[@]}" -x OMP_NUM_THREADS="$threads" ${MPIRUN_ARGS:-} \
  "$binary" train "$@" --set threads="$threads" &
job=$!
# shellcheck disable=SC2317  # called from the traps
forward() { pkill "-$1" -P "$job" || kill "-$1" "$job" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1
# `wait` returns early when a trapped signal arrives: wait again until mpirun has exited.
status=0
while :; do
  wait "$job" && status=0 || status=$?
  kill -0 "$job" 2>/dev/null || break
done
exit "$status"
