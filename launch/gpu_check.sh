#!/usr/bin/env bash
# The GPU check (docs/gpu.md). On a machine with a GPU, the CUDA toolkit, CMake and a compiler
# (nothing else: no MPI, HDF5, Protobuf or network), in this order, so that the first steps are
# useful alone if time runs out:
#   1. the GPU, driver and tool versions;
#   2. the CUDA-only build for sm_90 (-DMOETRON_CUDA_ONLY=ON), ptxas register and spill report;
#   3. every CUDA kernel against the host launchers of the same math, cuBLASLt against the host
#      GEMM, cuDNN's fused attention against a double reference and NCCL with one rank
#      (moetron_gpu_check); the attention needs cuDNN (the toolkit's,
#      or PyTorch's nvidia-cudnn wheel) and the frontend's headers in .deps/ (carried from a
#      machine where launch/fetch_cudnn_frontend.sh ran: the GPU machine has no network);
#   4. the op harness (moetron_backend_tests): every gradient case and the step, routing and
#      decoding ops on the CUDA backend against the CPU backend, where GoogleTest's sources are
#      in .deps/ (launch/fetch_googletest.sh, carried like the cuDNN frontend);
#   5. training (moetron_gpu_train): the demo model (configs/tiny.pbtxt) for 100 steps in fp32
#      and in bf16 on the synthetic token stream, each step's loss and gradient norm against the
#      CPU's in tests/reference/gpu/tiny.json; then tokens/s and MFU of the MoE benchmark
#      (bench/gpu-moe.pbtxt, about 0.73B parameters) in bf16 against the H200's 989 TFLOP/s;
#   6. compute-sanitizer memcheck, racecheck and initcheck on small sizes;
#   7. a summary table; with $OUT set, everything under $OUT (gpu_check.json, kernels.json,
#      train-*.json, bench.json, logs).
# Each step has a time limit (a hang fails its step, not the run), and gpu_check.json is
# rewritten after every step, so a run cut short still leaves the steps it finished.
# Exit status: 0 when every step that ran passed.
#   launch/gpu_check.sh            GPU_BUILD_DIR=build-gpu by default; CUDA_ARCH=90
#   TRAIN_DEVICE=cpu:1 TRAIN_STEPS=3 launch/gpu_check.sh
#                                  the dry run of step 5 without a GPU (the CUDA backend's code on
#                                  the host launchers; the benchmark is left out)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
build=${GPU_BUILD_DIR:-build-gpu}
arch=${CUDA_ARCH:-90}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export PATH="$PATH:/usr/local/cuda/bin"
declare -a names=() results=() times=()
failed=0

write_summary() {  # gpu_check.json of the steps so far
  local json="{\n  \"steps\": [" i
  for i in "${!names[@]}"; do
    json+="$([[ $i -gt 0 ]] && echo ,)\n    {\"step\": \"${names[$i]}\", \"result\": \"${results[$i]}\", \"seconds\": ${times[$i]}}"
  done
  echo -e "$json\n  ]\n}" > "$out/gpu_check.json"
}

record() {  # name result seconds
  names+=("$1") results+=("$2") times+=("$3")
  [[ $2 == pass || $2 == skipped* || $2 == measured* ]] || failed=1
  write_summary
}

# The result of a step's exit status: 124 is timeout's (the step ran past its limit).
failure() {  # status log
  if [[ $1 -eq 124 ]]; then echo "FAIL (timed out, see $2)"; else echo "FAIL (see $2)"; fi
}

run_step() {  # name log seconds command...: pass when the command exits 0 within its time
  local name=$1 log=$2 limit=$3 start=$SECONDS
  shift 3
  echo "== $name"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$log"
  local status=${PIPESTATUS[0]}
  if [[ $status -eq 0 ]]; then
    record "$name" pass $((SECONDS - start))
  else
    record "$name" "$(failure "$status" "$log")" $((SECONDS - start))
  fi
}

echo "== versions"
{
  date -u +"%Y-%m-%d %H:%M UTC"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
  else
    echo "nvidia-smi: not found"
  fi
  nvcc --version | tail -n 2
  cmake --version | head -n 1
  c++ --version | head -n 1
} 2>&1 | tee "$out/versions.txt"

generator=""
command -v ninja >/dev/null && generator="-G Ninja"
# cuDNN and NCCL: the toolkit's, else those PyTorch's wheels bring (nvidia/{cudnn,nccl}).
wheel_root() {  # the directory of Python package nvidia.$1 (a namespace package), or nothing
  python3 -c "import nvidia.$1 as m; print(list(m.__path__)[0])" 2>/dev/null || true
}
cudnn_root="" nccl_root=""
[[ -f /usr/local/cuda/include/cudnn.h ]] || cudnn_root=$(wheel_root cudnn)
[[ -f /usr/local/cuda/include/nccl.h ]] || nccl_root=$(wheel_root nccl)
echo "cuDNN: ${cudnn_root:-in the toolkit}; NCCL: ${nccl_root:-in the toolkit}" |
  tee -a "$out/versions.txt"
run_step "build (sm_$arch)" build.log 420 bash -c "
  cmake -S . -B '$build' $generator -DMOETRON_CUDA_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=$arch ${cudnn_root:+-DCUDNN_ROOT=$cudnn_root} \
    ${nccl_root:+-DNCCL_ROOT=$nccl_root} &&
  cmake --build '$build' -j \"\$(nproc)\""
grep -E "Compiling entry|registers|spill" "$out/build.log" > "$out/ptxas.txt" || true
# Whether the build found the libraries: without them the attention or the collectives go
# untested, which the summary says rather than passing quietly.
for lib in "cuDNN:cuDNN attention graphs with" "NCCL:NCCL with"; do
  if grep -q "moetron: ${lib#*:}" "$out/build.log"; then
    record "${lib%%:*} in the build" pass 0
  else
    record "${lib%%:*} in the build" "skipped: not found (its checks do not run)" 0
  fi
done

check=$build/moetron_gpu_check
gpu=yes  # until the kernel check finds none
start=$SECONDS
echo "== kernels against the host math, cuDNN attention against a double reference"
if [[ ! -x $check ]]; then
  record kernels "skipped: not built" 0
else
  timeout --kill-after=10 180 "$check" --json "$out/kernels.json" 2>&1 | tee "$out/kernels.log"
  status=${PIPESTATUS[0]}
  case $status in
    0) record kernels pass $((SECONDS - start)) ;;
    2)
      record kernels "skipped: no GPU" $((SECONDS - start))
      gpu=no
      ;;
    *)
      record kernels "$(failure "$status" kernels.log)" $((SECONDS - start))
      # A fault inside a kernel surfaces at the next copy; launched one at a time, the error
      # names the launch that faulted.
      CUDA_LAUNCH_BLOCKING=1 timeout --kill-after=10 120 "$check" > "$out/kernels-blocking.log" 2>&1
      ;;
  esac
fi

start=$SECONDS
echo "== the op harness: every op on every backend (the CUDA backend among them) against the CPU"
harness=$build/moetron_backend_tests
if [[ ! -x $harness ]]; then
  record "ops on the backends" "skipped: not built (no .deps/googletest)" 0
else
  timeout --kill-after=10 240 "$harness" --gtest_brief=1 \
    --gtest_output="json:$out/backend_tests.json" 2>&1 | tee "$out/backend_tests.log"
  status=${PIPESTATUS[0]}
  if [[ $status -ne 0 ]]; then
    record "ops on the backends" "$(failure "$status" backend_tests.log)" $((SECONDS - start))
  elif [[ $gpu == no ]]; then
    record "ops on the backends" "skipped: no GPU (cpu and cpu:1 passed)" $((SECONDS - start))
  else
    record "ops on the backends" pass $((SECONDS - start))
  fi
fi

train=$build/moetron_gpu_train
train_device=${TRAIN_DEVICE:-cuda}
for precision in f32 bf16; do
  start=$SECONDS
  name="training vs CPU ($precision)"
  echo "== $name: configs/tiny.pbtxt on $train_device against tests/reference/gpu/tiny.json"
  if [[ ! -x $train ]]; then
    record "$name" "skipped: not built" 0
    continue
  fi
  timeout --kill-after=10 240 "$train" check tests/reference/gpu/tiny.json \
    --device "$train_device" --precision $precision --steps "${TRAIN_STEPS:-0}" \
    --json "$out/train-$precision.json" 2>&1 | tee "$out/train-$precision.log"
  status=${PIPESTATUS[0]}
  case $status in
    0) record "$name" pass $((SECONDS - start)) ;;
    2) record "$name" "skipped: no GPU" $((SECONDS - start)) ;;
    *) record "$name" "$(failure "$status" "train-$precision.log")" $((SECONDS - start)) ;;
  esac
done
start=$SECONDS
echo "== MFU benchmark: bench/gpu-moe.pbtxt in bf16"
if [[ ! -x $train ]]; then
  record "MFU benchmark" "skipped: not built" 0
elif [[ $train_device != cuda ]]; then
  record "MFU benchmark" "skipped: not on a GPU" 0
else
  timeout --kill-after=10 240 "$train" bench tests/reference/gpu/gpu-moe.json --precision bf16 \
    --steps 10 --warmup 3 --json "$out/bench.json" 2>&1 | tee "$out/bench.log"
  status=${PIPESTATUS[0]}
  case $status in
    0) record "MFU benchmark" "measured: $(grep -o 'MFU [0-9.]*%' "$out/bench.log")" \
         $((SECONDS - start)) ;;
    2) record "MFU benchmark" "skipped: no GPU" $((SECONDS - start)) ;;
    *) record "MFU benchmark" "$(failure "$status" bench.log)" $((SECONDS - start)) ;;
  esac
fi

# memcheck over everything; racecheck (shared memory) and initcheck (reads of memory nothing
# wrote) over moetron's kernels only: the libraries' are slow under them and not ours to fix.
for tool in memcheck racecheck initcheck; do
  start=$SECONDS
  echo "== compute-sanitizer $tool"
  if ! command -v compute-sanitizer >/dev/null; then
    record "sanitizer $tool" "skipped: no compute-sanitizer" 0
  elif [[ ! -x $check || $gpu == no ]]; then
    record "sanitizer $tool" "skipped: no GPU or not built" 0
  else
    timeout --kill-after=10 240 compute-sanitizer --tool "$tool" --error-exitcode 3 "$check" \
      --small $([[ $tool != memcheck ]] && echo --kernels-only) 2>&1 |
      tee "$out/sanitizer-$tool.log"
    status=${PIPESTATUS[0]}
    # The check's own verdict (1: a kernel out of bounds) is the kernels step's; the tool's is 3.
    if [[ $status -eq 0 || $status -eq 1 ]]; then
      record "sanitizer $tool" pass $((SECONDS - start))
    else
      record "sanitizer $tool" "$(failure "$status" "sanitizer-$tool.log")" $((SECONDS - start))
    fi
  fi
done

echo
echo "== summary"
printf '%-28s %-52s %6s\n' step result seconds
for i in "${!names[@]}"; do
  printf '%-28s %-52s %6s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
echo "results: $out"
exit $failed
