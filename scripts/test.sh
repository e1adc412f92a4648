#!/usr/bin/env bash
# scripts/test.sh: install, build and run every test. Three phases, each failing the script:
#  1. the Release build (CUDA when nvcc is found) and its CTest suite: reference generators
#     (PyTorch, and Keras/TensorFlow in build/keras-venv, made once by scripts/keras_env.sh) as
#     fixtures, then the GoogleTest suites and tests/readme_commands.sh. CUDA tests skip with a
#     printed reason when no GPU exists (ENGINE_REQUIRE_GPU=1 makes them fail instead).
#  2. the same CPU suite built with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan,
#     -fno-sanitize-recover: any report aborts the test), reusing phase 1's references; this
#     includes the tools run by tests/readme_commands.sh. ENGINE_SKIP_SANITIZE=1 skips it (for
#     quick local runs only; CI never sets it).
# Extra arguments go to both ctest runs (e.g. -R test_head).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
KERAS_PY=$(scripts/keras_env.sh build/keras-venv)
cmake -S . -B build -DENGINE_KERAS_PYTHON="$PWD/$KERAS_PY" >/dev/null
echo "test: phase 1: Release suite"
(cd build && ctest --output-on-failure -j2 "$@")
if [ "${ENGINE_SKIP_SANITIZE:-0}" = 1 ]; then
  echo "test: phase 2 (sanitizers) SKIPPED: ENGINE_SKIP_SANITIZE=1"
  exit 0
fi
echo "test: phase 2: ASan + UBSan CPU suite (build-asan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DENGINE_SANITIZE=ON -DENGINE_WITH_CUDA=OFF \
  -DENGINE_BUILD_BENCH=OFF -DENGINE_REFERENCE_DIR="$PWD/build/reference" \
  -DENGINE_KERAS_PYTHON="$PWD/$KERAS_PY" >build-asan.configure.log 2>&1 || { cat build-asan.configure.log; exit 1; }
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS=abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
(cd build-asan && ctest --output-on-failure -j2 "$@")
