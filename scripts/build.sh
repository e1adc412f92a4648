#!/usr/bin/env bash
# scripts/build.sh: installs missing dependencies, configures and builds into ./build (Release).
# CUDA is enabled automatically when nvcc is found (/usr/local/cuda); CMAKE_CUDA_ARCHITECTURES
# defaults to 90. Extra arguments go to cmake's configure step; BUILD_TARGETS="a b" builds only
# those targets (scripts/demo.sh builds just the tools).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
grep -E "^-- engine:" build.configure.log || true
if [ -n "${BUILD_TARGETS:-}" ]; then
  # shellcheck disable=SC2086
  cmake --build build -j"$(nproc)" --target $BUILD_TARGETS
else
  cmake --build build -j"$(nproc)"
fi
