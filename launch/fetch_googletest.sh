#!/usr/bin/env bash
# GoogleTest's sources for the CUDA-only build's op harness (moetron_backend_tests, run by
# launch/gpu_check.sh): the GPU machine has no GoogleTest and no network, so they are copied
# here from Debian's googletest package (what libgtest-dev builds from) into .deps/googletest
# (ignored by git), and carried there with .deps/. Does nothing when they are there already.
#   launch/fetch_googletest.sh        GTEST_SRC=/usr/src/googletest by default
set -euo pipefail
cd "$(dirname "$0")/.."
src=${GTEST_SRC:-/usr/src/googletest}
dest=.deps/googletest
if [ -f "$dest/CMakeLists.txt" ]; then
  echo "fetch_googletest: present ($dest)"
  exit 0
fi
if [ ! -f "$src/CMakeLists.txt" ]; then
  echo "fetch_googletest: no GoogleTest sources in $src (Debian: apt-get install googletest)" >&2
  exit 1
fi
mkdir -p .deps
rm -rf "$dest.partial"
cp -r "$src" "$dest.partial"
mv "$dest.partial" "$dest"  # whole or not at all
echo "fetch_googletest: $src -> $dest ($(du -sh "$dest" | cut -f1))"
