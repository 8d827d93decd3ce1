#!/usr/bin/env bash
# Installs every Debian 12 package moetron needs to build, test, prepare data and benchmark.
# Idempotent and non-interactive: when everything is present it changes nothing. Where the CUDA
# toolkit has cuDNN, also the cuDNN frontend's headers (launch/fetch_cudnn_frontend.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin              # MPI
  libhdf5-openmpi-dev hdf5-tools          # parallel HDF5 (MPI-IO)
  libprotobuf-dev protobuf-compiler       # configs
  libdnnl-dev libopenblas-dev             # GEMM: oneDNN, OpenBLAS fallback
  ocl-icd-opencl-dev                      # dnnl-config.cmake needs OpenCL (a Recommends only)
  libsentencepiece-dev                    # SentencePiece tokenizer
  libgtest-dev                            # tests
  fortunes fortunes-min                   # the embedded default dataset
  python3-torch python3-h5py python3-numpy  # PyTorch reference (goldens, benchmark)
  python3-matplotlib                      # expert-load heatmaps (bench/plot_expert_load.py)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
launch/fetch_cudnn_frontend.sh
