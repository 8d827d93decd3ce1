#!/usr/bin/env bash
# The cuDNN frontend's C++ headers (NVIDIA, MIT licence, header-only), with which the CUDA
# backend builds its attention graphs (core/cuda/attention_graph.h). The toolkit ships cuDNN but
# not its frontend, and Debian has neither, so this takes the headers from the frontend's PyPI
# wheel: a pinned version, checked against its sha256, its include/ unpacked into
# .deps/cudnn-frontend-VERSION/ (ignored by git; CMake finds it there). Does nothing when the
# headers are there already, or when the CUDA toolkit has no cuDNN (then nothing would use them).
#   launch/fetch_cudnn_frontend.sh      CUDA_HOME=/usr/local/cuda by default
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.32.0
wheel=nvidia_cudnn_frontend-$version-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
url=https://files.pythonhosted.org/packages/11/02/660e2dd9f9d9f940e1641443771730612c3aadaafbc5ef7a93cc313d519d/$wheel
sha256=c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0
dest=.deps/cudnn-frontend-$version
cuda=${CUDA_HOME:-/usr/local/cuda}

if [ -f "$dest/include/cudnn_frontend.h" ]; then
  echo "setup: cuDNN frontend $version present ($dest)"
  exit 0
fi
if [ ! -f "$cuda/include/cudnn.h" ]; then
  echo "setup: no cuDNN in $cuda: the cuDNN frontend is not needed"
  exit 0
fi
echo "setup: fetching the cuDNN frontend $version headers from PyPI into $dest"
mkdir -p .deps
# Without them the build goes on without cuDNN attention (and says so), so a failed download
# warns instead of stopping the set-up.
if ! python3 - "$url" "$sha256" "$dest" <<'PY'
import hashlib, io, os, shutil, sys, urllib.request, zipfile
url, sha256, dest = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
got = hashlib.sha256(data).hexdigest()
if got != sha256:
    sys.exit(f"fetch_cudnn_frontend: {url} has sha256 {got}, expected {sha256}")
tmp = dest + ".partial"
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(io.BytesIO(data)) as z:
    names = [n for n in z.namelist() if n.startswith("include/")]
    licences = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE.txt")]
    z.extractall(tmp, names + licences)
shutil.rmtree(dest, ignore_errors=True)
os.replace(tmp, dest)  # whole or not at all
PY
then
  echo "setup: WARNING: could not fetch the cuDNN frontend from $url;" \
    "building without cuDNN attention (rerun launch/setup.sh to retry)" >&2
  exit 0
fi
echo "setup: cuDNN frontend $version in $dest"
