#!/usr/bin/env bash
# Creates the Python venv with current PyTorch from PyPI that bench/run_bench.sh measures as its
# second PyTorch peer ("pytorch_pypi", next to Debian's python3-torch 1.13 on OpenBLAS): the
# PyTorch a user installs today (2.x, MKL + oneDNN). Not part of launch/setup.sh or CI: it is
# several GB. run_bench.sh uses the venv when it exists and reports "not measured" otherwise.
#
#   bench/setup_torch_venv.sh
#
# TORCH_VENV     where the venv goes (default bench/.venv-torch, git-ignored; run_bench.sh
#                reads the same variable)
# PYTHON         the interpreter that creates it (default: the first `python3` on PATH that has
#                the venv and ensurepip modules, else /usr/bin/python3, which needs Debian's
#                python3-venv)
# TORCH_INDEX    where torch comes from: "auto" (default: the CPU-only wheel index
#                https://download.pytorch.org/whl/cpu when it answers: much smaller, no CUDA
#                wheels; else plain PyPI), "cpu" or "pypi"
#
# Which index was used is written to $TORCH_VENV/moetron-torch-source and printed, with the
# torch version and torch.__config__.show() (its BLAS, MKL and oneDNN). Idempotent: when the
# venv already imports torch it only reports.
#
# Used for docs/bench.md (2026-11-25, the 2-core AMD EPYC it describes): download.pytorch.org
# did not resolve there, so plain PyPI: torch 2.15.0+cu132 (MKL 2024.2, oneDNN v3.13.3, ATen
# CPU capability AVX512) and numpy 2.4.6 on the pyenv Python 3.11.7; 5.4 GB on disk, 3.0 GB of
# it the nvidia-* CUDA wheels, which the CPU benchmark does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TORCH_VENV:-bench/.venv-torch}
index=${TORCH_INDEX:-auto}
cpu_index=https://download.pytorch.org/whl/cpu
case "$index" in auto|cpu|pypi) ;; *) echo "setup_torch_venv: TORCH_INDEX must be auto, cpu or pypi, not '$index'" >&2; exit 2 ;; esac

report() {
  "$venv/bin/python" - "$venv" <<'PY'
import os, sys, torch
venv = sys.argv[1]
src = os.path.join(venv, "moetron-torch-source")
print(f"venv: {venv} (python {sys.version.split()[0]})")
print("torch from:", open(src).read().strip() if os.path.exists(src) else "unknown")
print("torch", torch.__version__)
print(torch.__config__.show())
PY
  echo "size: $(du -sh "$venv" | cut -f1)"
}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "setup_torch_venv: $venv already has torch; nothing to do"
  report
  exit 0
fi

can_venv() { "$1" -c 'import venv, ensurepip' 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
  can_venv "$py" || { echo "setup_torch_venv: $py cannot create venvs (no venv/ensurepip module)" >&2; exit 1; }
elif command -v python3 >/dev/null && can_venv "$(command -v python3)"; then
  py=$(command -v python3)
elif can_venv /usr/bin/python3; then
  py=/usr/bin/python3
else
  echo "setup_torch_venv: no python3 that can create venvs; install Debian's python3-venv" \
       "(apt-get install python3-venv) or set PYTHON" >&2
  exit 1
fi

py=$("$py" -c 'import sys; print(sys.executable)')  # the interpreter itself, not a pyenv shim
echo "setup_torch_venv: creating $venv with $py ($("$py" --version 2>&1))"
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
"${pip[@]}" --upgrade pip

if [ "$index" = auto ]; then
  if "$venv/bin/python" -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=15)" 2>/dev/null; then
    index=cpu
  else
    echo "setup_torch_venv: $cpu_index does not answer; using plain PyPI (CUDA build, several GB)"
    index=pypi
  fi
fi
installed=""
if [ "$index" = cpu ]; then
  if "${pip[@]}" --index-url "$cpu_index" torch; then
    installed="CPU-only wheel index $cpu_index"
  else
    echo "setup_torch_venv: installing from $cpu_index failed; falling back to plain PyPI"
  fi
fi
if [ -z "$installed" ]; then
  "${pip[@]}" torch
  installed="plain PyPI (https://pypi.org/simple)"
fi
# What bench/torch_reference.py (and tests/reference/model.py, moe.py) import besides torch:
# only the standard library; numpy keeps torch from warning that it is missing.
"${pip[@]}" numpy
echo "$installed, $(date -u +%Y-%m-%d)" > "$venv/moetron-torch-source"
echo "setup_torch_venv: done"
report
