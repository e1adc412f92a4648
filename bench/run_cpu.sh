#!/usr/bin/env bash
# bench/run_cpu.sh: CPU benchmarks in one run: our Inception v3 forward and PyTorch 1.13 (default
# NCHW, channels_last, frozen TorchScript) on the same weight file and threads, interleaved
# (bench/compare_cpu.py), then the per-layer benchmark. Needs scripts/build.sh and the reference
# files (scripts/test.sh or scripts/demo.sh make both).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
/usr/bin/python3 bench/compare_cpu.py --build build --rounds "${ROUNDS:-3}" --threads "$OMP_NUM_THREADS"
echo "== layers (batch 8)"; build/bench/bench_layers
