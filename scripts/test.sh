#!/usr/bin/env bash
# scripts/test.sh: install, build and run every test (CTest: the PyTorch reference generator as a
# fixture, then the GoogleTest suites). CUDA tests skip with a printed reason when no GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
scripts/keras_env.sh build/keras-venv >/dev/null
cd build
ctest --output-on-failure -j2 "$@"
