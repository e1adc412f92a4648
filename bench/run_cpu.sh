#!/usr/bin/env bash
# bench/run_cpu.sh: CPU benchmarks in one run: our Inception v3 forward in fp32, bf16 and int8
# beside OpenVINO (default = bf16 on this CPU, and f32), ONNX Runtime and PyTorch 1.13 (default
# NCHW, channels_last, frozen TorchScript) on the same weight file and threads, interleaved, with
# the cores' measured fp32/bf16/int8 peak (bench/compare_cpu.py), then the per-layer benchmark.
# Needs scripts/build.sh and the reference files (scripts/test.sh or scripts/demo.sh make both);
# creates the peers' venv (bench/peers_venv.sh, build/peers-venv) and the ONNX file
# (bench/export_onnx.py, build/peers/) when missing. Extra arguments go to compare_cpu.py, e.g.
#   ROUNDS=4 bench/run_cpu.sh --json build/compare_cpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
bench/peers_venv.sh build/peers-venv
/usr/bin/python3 bench/compare_cpu.py --build build --rounds "${ROUNDS:-3}" --threads "$OMP_NUM_THREADS" "$@"
echo "== layers (batch 8)"; build/bench/bench_layers
