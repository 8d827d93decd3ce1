#!/usr/bin/env bash
# Creates the Python venv in which tests/reference/check_transformers_export.py loads a
# `moetron export` in current Hugging Face transformers (its own Glm4MoeForCausalLM) and
# compares the logits with moetron's (docs/export.md). Not part of launch/setup.sh or CI: it
# needs PyPI and PyTorch 2.x.
#
#   tests/reference/setup_transformers_venv.sh
#
# TRANSFORMERS_VENV  where the venv goes (default .cache/venv-transformers, git-ignored)
# TORCH_VENV         the venv with current PyTorch that bench/setup_torch_venv.sh makes (default
#                    bench/.venv-torch); made first when it is missing
# TRANSFORMERS_SPEC  what pip installs (default "transformers", the newest release)
#
# The new venv does not hold a second copy of torch (several GB): it is created with the torch
# venv's interpreter and a .pth file puts the torch venv's site-packages after its own, so
# `import torch` finds that torch and pip counts it as installed. Everything transformers needs
# besides (huggingface_hub, tokenizers, safetensors, ...) goes into the new venv only; the torch
# venv is not changed. The versions are printed and written to $TRANSFORMERS_VENV/moetron-versions.
# Idempotent: when the venv already imports transformers it only reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${TRANSFORMERS_VENV:-.cache/venv-transformers}
torch_venv=${TORCH_VENV:-bench/.venv-torch}
spec=${TRANSFORMERS_SPEC:-transformers}

report() {
  "$venv/bin/python" - "$venv" <<'PY' | tee "$venv/moetron-versions"
import sys, torch, transformers, safetensors, tokenizers
print(f"venv: {sys.argv[1]} (python {sys.version.split()[0]})")
print(f"transformers {transformers.__version__}, torch {torch.__version__} ({torch.__file__}),"
      f" safetensors {safetensors.__version__}, tokenizers {tokenizers.__version__}")
PY
}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import transformers, torch' 2>/dev/null; then
  echo "setup_transformers_venv: $venv already has transformers; nothing to do"
  report
  exit 0
fi

if ! { [ -x "$torch_venv/bin/python" ] && "$torch_venv/bin/python" -c 'import torch' 2>/dev/null; }; then
  echo "setup_transformers_venv: $torch_venv has no torch; making it with bench/setup_torch_venv.sh"
  TORCH_VENV=$torch_venv bench/setup_torch_venv.sh
fi

py=$("$torch_venv/bin/python" -c 'import sys; print(sys._base_executable)')
torch_site=$("$torch_venv/bin/python" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
echo "setup_transformers_venv: creating $venv with $py, torch from $torch_site"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$(cd "$torch_site" && pwd)" > "$site/moetron-torch-venv.pth"
"$venv/bin/python" -c 'import torch' || {
  echo "setup_transformers_venv: torch from $torch_site does not import in $venv" >&2
  exit 1
}
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "$spec"
echo "setup_transformers_venv: done"
report
