#!/usr/bin/env bash
# bench/gpu/run_device.sh: the one prepared script for the GPU machine (bench/README.md, GPU).
# Expects .gpu/ staged by bench/gpu/stage.sh and carried: run(command="bash bench/gpu/run_device.sh",
# carry=[".gpu"], timeout_s=600). Steps, each with its own timeout so that one hang cannot eat the
# slot (~8 minutes in all): card info; reference weights + tensors regenerated here with
# tests/reference/make_reference.py; the CUDA tests (test_inception_cuda, test_head *Cuda*); our
# benchmark (bench_inception_cuda, JSON) and bench_head; the PyTorch baseline
# (bench/gpu/torch_inception_gpu.py, same weights); then the ratios ours / PyTorch.
# Full logs go to $OUT (they come back as files); stdout gets a summary that fits the 12k tail.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
source .gpu/gpuenv.sh
REF=${ENGINE_REFERENCE_DIR:-/tmp/engine_reference}
export ENGINE_REFERENCE_DIR=$REF
export ENGINE_REQUIRE_GPU=1  # on the GPU machine a missing device fails the CUDA tests instead of skipping them
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "card"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" 2>&1 | tee -a "$OUT/gpu.txt"

step "reference (make_reference.py --out $REF)"
timeout 180 python3 tests/reference/make_reference.py --out "$REF" > "$OUT/make_reference.log" 2>&1
echo "make_reference rc=$?"; tail -2 "$OUT/make_reference.log"

step "test_inception_cuda"
timeout 240 .gpu/test_inception_cuda --gtest_output=json:"$OUT/test_inception_cuda.json" > "$OUT/test_inception_cuda.log" 2>&1
echo "test_inception_cuda rc=$?"
grep -E '^\[ +(OK|FAILED|SKIPPED|PASSED) +\]|relative L2|MiB|bottleneck:|Failure|error|expected|Which is' "$OUT/test_inception_cuda.log" | cut -c1-220 | head -60

step "test_head (Cuda)"
timeout 60 .gpu/test_head --gtest_filter='*Cuda*' > "$OUT/test_head.log" 2>&1
echo "test_head rc=$?"; grep -E '^\[ +(PASSED|FAILED) +\]' "$OUT/test_head.log"

step "bench_inception_cuda"
timeout 240 .gpu/bench_inception_cuda --benchmark_out="$OUT/bench_inception_cuda.json" --benchmark_out_format=json \
  > "$OUT/bench_inception_cuda.log" 2>&1
echo "bench_inception_cuda rc=$?"
grep -E 'validated|validation|error|MiB on the GPU|BM_|slowest' "$OUT/bench_inception_cuda.log" | cut -c1-400

step "bench_head"
timeout 60 .gpu/bench_head > "$OUT/bench_head.log" 2>&1; echo "bench_head rc=$?"; grep -E 'BM_' "$OUT/bench_head.log" | head -12

step "PyTorch baseline"
timeout 200 python3 bench/gpu/torch_inception_gpu.py --weights "$REF/inception_v3_1based.h5" --json "$OUT/torch.json" \
  > "$OUT/torch.log" 2>&1
echo "torch rc=$?"; grep -E '^torch|error|Error' "$OUT/torch.log" | head -20

step "ratios"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
try:
    ours = {b["label"] + "/" + b["name"].split("batch:")[-1].split("/")[0]: b
            for b in json.load(open(os.path.join(out, "bench_inception_cuda.json")))["benchmarks"] if "label" in b}
    torch = {r["mode"]: r for r in json.load(open(os.path.join(out, "torch.json")))}
except Exception as e:
    print("ratios unavailable:", e); sys.exit(0)
pairs = [("fp32_nchw/128", "fp32", 1.2), ("fp32_nhwc/128", "fp32", 1.2), ("tf32/128", "tf32", 1.2),
         ("fp16/128", "fp16_channels_last", None), ("fp16/128", "fp16_compile", 1.3)]
for k, t, target in pairs:
    if k in ours and t in torch:
        r = ours[k]["img/s"] / torch[t]["img_per_s"]
        print("%-14s %9.1f img/s (%5.1f TFLOP/s of %s peak)  vs torch %-20s %9.1f img/s  ratio %.2fx%s" % (
            k, ours[k]["img/s"], ours[k]["TFLOP/s"], ours[k].get("peak_TFLOP/s", 0), t, torch[t]["img_per_s"], r,
            "  (target %.1fx: %s)" % (target, "met" if r >= target else "NOT met") if target else ""))
for k in ("fp32_nchw/1", "fp32_nchw_host/1", "fp16/1"):
    if k in ours:
        ms = ours[k]["real_time"] if ours[k].get("time_unit") == "ms" else ours[k]["real_time"] / 1e6
        print("%-14s latency %.3f ms per image (target <= 2 ms)%s" % (k, ms, "; torch fp32 eager %.2f ms, graph %.2f ms" % (
            torch["fp32_b1_eager"]["ms_per_batch"], torch["fp32_b1_graph"]["ms_per_batch"])
            if "fp32_b1_eager" in torch and "fp32_b1_graph" in torch else ""))
PY
step "done; logs in $OUT"
