#!/usr/bin/env bash
# bench/run_cpu.sh: CPU benchmarks side by side in one run: our Inception v3 forward
# (bench_inception) and PyTorch 1.13 (default NCHW, channels_last, frozen TorchScript) on the
# same weight file, 2 threads each, then the per-layer benchmark. Run after scripts/build.sh and
# the reference generator (scripts/test.sh or scripts/demo.sh do both).
set -euo pipefail
cd "$(dirname "$0")/.."
W=build/reference/inception_v3_1based.h5
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "== ours"; ENGINE_REFERENCE_DIR=build/reference build/bench/bench_inception
echo "== pytorch"; /usr/bin/python3 bench/torch_inception_cpu.py --weights "$W" --threads "$OMP_NUM_THREADS" --batches 1,8
echo "== layers"; build/bench/bench_layers
