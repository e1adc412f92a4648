#!/usr/bin/env bash
# bench/gpu/run_device.sh: the one prepared script for the GPU machine (bench/README.md, GPU).
# Needs .gpu/engine_gpu.tar.xz from bench/gpu/stage.sh, carried:
#   run(command="bash bench/gpu/run_device.sh", carry=[".gpu"], timeout_s=540)
# Unpacks the bundle into ROOT (/tmp/engine_gpu), then runs the steps of STEPS below in order, each
# under its own cap (the caps sum to under 480 s, so the script ends inside one 600 s command with
# room for the machine's start in the session's 15 minutes). Each step's output goes to
# ROOT/logs/NAME.log; stdout gets one summary line per step (name, status, rc, seconds, cap) plus a
# digest (test counts, failures, img/s); at the end ROOT/logs is packed into ONE archive,
# $OUT/gpu_logs.tar.xz, beside $OUT/summary.txt: two files of the 8 that come back.
# ENGINE_REQUIRE_GPU=1 is exported, so a GPU test that finds no device FAILS instead of skipping.
# --dry-run (bench/gpu/dry_run.sh, on a machine without a GPU): ENGINE_REQUIRE_GPU stays unset,
# the GPU cases skip, the no-GPU steps report 'no GPU', and the caps are scaled by
# ENGINE_GPU_CAP_SCALE (a 2-core build machine runs the CPU parts slower than the GPU machine).
# --only STEP,... runs those steps (plus card, unpack, weights, report): a rerun of what failed.
# --caps prints the step table and the sum, and runs nothing.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
repo=$(pwd)

# name cap_seconds (order = run order). test_* steps run gtest programs; `weights` waits for the
# weight file generated in the background from `unpack` on (the CPU job overlaps the first tests).
STEPS=(
  "card 10" "unpack 15"
  "test_cuda 15" "test_kernels_head 25" "test_kernels_layers 35" "test_head 15"
  "weights 30" "test_inception_cuda 55"
  "test_extract 25" "test_predict 20" "test_train 15" "test_cuda_more 30"
  "memcheck 35"
  "bench_kernels_cuda 20" "bench_inception_cuda 55"
  "torch 50" "report 5"
)
# The test programs the steps above name; test_cuda_more runs every other staged tests/test_*cuda*.
NAMED_TESTS=" test_cuda test_kernels_head test_kernels_layers test_head test_inception_cuda test_extract test_predict test_train "
caps_sum() { local s=0 e; for e in "${STEPS[@]}"; do s=$((s + ${e#* })); done; echo "$s"; }

dry=0
root=/tmp/engine_gpu
only=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 ;;
    --root) root=$2; shift ;;
    --only) only=",$2,"; shift ;;
    --caps) printf '%s\n' "${STEPS[@]}"; echo "sum $(caps_sum)"; exit 0 ;;
    *) echo "usage: bash bench/gpu/run_device.sh [--dry-run] [--root DIR] [--only STEP,...] [--caps]" >&2; exit 2 ;;
  esac
  shift
done
bundle=$repo/.gpu/engine_gpu.tar.xz
[ -f "$bundle" ] || { echo "run_device.sh: $bundle missing: run bench/gpu/stage.sh first and carry .gpu" >&2; exit 2; }
OUT=${OUT:-$root.out}
scale=1
[ $dry = 1 ] && scale=${ENGINE_GPU_CAP_SCALE:-4}
if [ -e "$root" ] && [ ! -f "$root/.engine_gpu_root" ]; then
  echo "run_device.sh: $root exists and is not ours: pass --root" >&2; exit 2
fi
rm -rf "$root"
logs=$root/logs
mkdir -p "$logs" "$OUT"
touch "$root/.engine_gpu_root"
export ENGINE_REFERENCE_DIR=$root/ref
if [ $dry = 1 ]; then unset ENGINE_REQUIRE_GPU; else export ENGINE_REQUIRE_GPU=1; fi
export root logs repo dry
t_start=$(date +%s.%N)
echo "run_device.sh: $(date -u +%FT%TZ) on $(hostname), root $root, caps sum $(caps_sum) s (x$scale)$([ $dry = 1 ] && echo ', DRY RUN')"

cap_of() { local e; for e in "${STEPS[@]}"; do [ "${e% *}" = "$1" ] && { echo "${e#* }"; return; }; done; echo 0; }

# One line of test counts from a gtest log: ok / skipped / failed (+ the failed names).
gtest_digest() {
  local f=$1 ok sk fl names
  ok=$(grep -c '^\[       OK \]' "$f"); sk=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$f")
  names=$(grep '^\[  FAILED  \] [A-Za-z]' "$f" | sed 's/^\[  FAILED  \] //; s/ (.*//; s/,.*//' | sort -u)
  fl=$(printf '%s' "$names" | grep -c .)
  printf '%s ok, %s skipped, %s failed' "$ok" "$sk" "$fl"
  [ $((ok + sk + fl)) = 0 ] && printf ' (NO TEST RAN: none matched the filter, or the program did not start)'
  [ "$fl" -gt 0 ] && printf '\n    failed: %s' "$(echo "$names" | head -12 | paste -sd' ')"
  grep -m1 -q 'no GPU' "$f" && printf '\n    %s' "$(grep -m1 -o 'no GPU.*' "$f" | cut -c1-150)"
  true
}

# finish NAME RC T0: the step's summary line (+ digest) on stdout and in logs/summary.txt.
finish() {
  local name=$1 rc=$2 t0=$3 cap status secs detail=""
  cap=$(cap_of "$name")
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case $rc in 0) status=ok ;; 77) status=SKIP ;; 124|137) status=TIMEOUT ;; *) status=FAIL ;; esac
  if [[ $name == test_* ]]; then detail=$(gtest_digest "$logs/$name.log")
    [[ $detail == *"NO TEST RAN"* ]] && [ "$status" = ok ] && status=EMPTY
  elif [ -f "$logs/$name.digest" ]; then detail=$(cat "$logs/$name.digest")
  fi
  printf 'STEP %-20s %-7s rc=%-3s %6.1f s (cap %3d s)  %s\n' "$name" "$status" "$rc" "$secs" "$cap" "$detail" |
    tee -a "$logs/summary.txt"
}

# run_step NAME CMD...: CMD under the step's (scaled) cap; output into logs/NAME.log.
run_step() {
  local name=$1 t0; shift
  # --only (a rerun of some steps): card, unpack, weights and report always run.
  if [ -n "$only" ] && [[ $only != *",$name,"* ]] && [[ " card weights report " != *" $name "* ]]; then
    return 0
  fi
  t0=$(date +%s.%N)
  timeout -k 5 $(($(cap_of "$name") * scale)) "$@" > "$logs/$name.log" 2>&1
  finish "$name" $? "$t0"
}
gtest_step() {  # gtest_step NAME [FILTER]
  local name=$1 filter=${2:-*}
  run_step "$name" "$root/tests/$name" --gtest_filter="$filter" --gtest_output=json:"$logs/$name.json"
}
have_gpu() { nvidia-smi -L > /dev/null 2>&1; }
export -f have_gpu

# ---- card: the GPU, the driver, the CPU; no nvidia-smi: no GPU (a failure unless --dry-run).
step_card() {
  echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  if ! have_gpu; then echo "no GPU: nvidia-smi -L fails or is missing" | tee "$logs/card.digest"
    [ "$dry" = 1 ] && return 77 || return 1; fi
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$logs/card.digest"
}
export -f step_card
run_step card bash -c step_card

# ---- unpack: the bundle into ROOT, the loader path, the compile-time paths, a Python with torch.
export LD_BEFORE=${LD_LIBRARY_PATH-}
py_with() { local p=$1; shift; LD_LIBRARY_PATH=$LD_BEFORE "$p" "$@"; }
py() { py_with "$PY" "$@"; }
export -f py_with py
t0=$(date +%s.%N)
{
  rc=0
  timeout $((15 * scale)) tar -C "$root" -xJf "$bundle" || rc=$?
  if [ $rc = 0 ]; then
    # shellcheck disable=SC1091
    source "$root/gpuenv.sh" && source "$root/staged.env" || rc=1
  fi
  if [ $rc = 0 ]; then
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    cat "$root/staged.env"
    # The tests run the tools from ENGINE_BINARY_DIR/tools and the Python scripts from
    # ENGINE_SOURCE_DIR, both compiled in: where those paths are missing (the GPU machine), link
    # them to the bundle and this checkout (we run as root there).
    if [ ! -x "$ENGINE_STAGED_BINARY_DIR/tools/extract" ]; then
      mkdir -p "$ENGINE_STAGED_BINARY_DIR" && ln -sfn "$root/tools" "$ENGINE_STAGED_BINARY_DIR/tools" &&
        echo "linked $ENGINE_STAGED_BINARY_DIR/tools -> $root/tools" || rc=1
    else echo "$ENGINE_STAGED_BINARY_DIR/tools exists here: the tests use it"; fi
    if [ ! -d "$ENGINE_STAGED_SOURCE_DIR/tests/reference" ]; then
      mkdir -p "$(dirname "$ENGINE_STAGED_SOURCE_DIR")" && ln -sfn "$repo" "$ENGINE_STAGED_SOURCE_DIR" &&
        echo "linked $ENGINE_STAGED_SOURCE_DIR -> $repo" || rc=1
    fi
    missing=$(ldd "$root"/tests/* "$root"/tools/* "$root"/bench/* 2>&1 | grep 'not found' | sort -u)
    [ -z "$missing" ] || { echo "unresolved libraries: $missing"; rc=1; }
    # A Python with torch + h5py + numpy: the device image's PyTorch venv, else python3. It runs
    # with the loader path from before gpuenv.sh (py below): the bundle's libraries are for our
    # programs, not for torch's.
    PY=
    for p in /opt/torch/.venv/bin/python3 /opt/torch/.venv/bin/python python3 /usr/bin/python3; do
      if py_with "$p" -c 'import torch, h5py, numpy' 2> /dev/null; then PY=$(command -v "$p"); break; fi
    done
    echo "python: ${PY:-none with torch + h5py + numpy}"
    [ -n "$PY" ] || rc=1
  fi
} > "$logs/unpack.log" 2>&1
export PY LD_LIBRARY_PATH
printf '%s MiB unpacked, python %s, %s' "$(du -sm "$root" | cut -f1)" "${PY:-NONE}" \
  "$(grep -m1 -E '^linked|exists here|unresolved' "$logs/unpack.log")" > "$logs/unpack.digest"
finish unpack "$rc" "$t0"
if [ "$rc" != 0 ]; then
  echo "run_device.sh: unpack failed; log:"; tail -20 "$logs/unpack.log"
  tar -C "$root" -cJf "$OUT/gpu_logs.tar.xz" logs; cp "$logs/summary.txt" "$OUT/"; exit 1
fi

# The weight file (seeded random, identical to build/reference's) generated in the background.
(
  timeout -k 5 $((150 * scale)) bash -c 'py "$@"' py "$repo/tests/reference/make_reference.py" \
    --weights-only "$root/ref/inception_v3_1based.h5" --force > "$logs/weights_gen.log" 2>&1
  echo $? > "$root/weights.rc"
) &

gtest_step test_cuda
gtest_step test_kernels_head 'Cuda/*'
gtest_step test_kernels_layers 'Cuda/*'
gtest_step test_head '*Cuda*'

step_weights() {
  while [ ! -f "$root/weights.rc" ]; do sleep 0.5; done
  cat "$logs/weights_gen.log"
  ls -l "$root/ref/inception_v3_1based.h5" && return "$(cat "$root/weights.rc")"
}
export -f step_weights
run_step weights bash -c step_weights

gtest_step test_inception_cuda
# The tools end to end with --device cuda vs their CPU run: the *Cuda* cases of the tool's test
# program, and its whole test_TOOL_cuda program where there is one.
step_tool_tests() {  # step_tool_tests NAME
  local rc=0
  "$root/tests/$1" --gtest_filter='*Cuda*' --gtest_output=json:"$logs/$1.json" || rc=1
  if [ -x "$root/tests/$1_cuda" ]; then
    "$root/tests/$1_cuda" --gtest_output=json:"$logs/$1_cuda.json" || rc=1
  fi
  return $rc
}
export -f step_tool_tests
for t in test_extract test_predict test_train; do run_step $t bash -c 'step_tool_tests "$0"' $t; done
step_test_cuda_more() {  # every other GPU test program, whole (their logs one after the other)
  local t rc=0
  for t in "$root"/tests/test_*cuda*; do
    [[ $NAMED_TESTS == *" $(basename "$t") "* || $NAMED_TESTS == *" $(basename "$t" _cuda) "* ]] && continue
    echo "### $(basename "$t")"
    "$t" --gtest_output=json:"$logs/$(basename "$t").json" || rc=1
  done
  return $rc
}
export -f step_test_cuda_more
export NAMED_TESTS
run_step test_cuda_more bash -c step_test_cuda_more

# ---- memcheck: compute-sanitizer over the kernel tests' CUDA cases. Refused (e.g. under gVisor)
# or missing: reported, and the run goes on.
step_memcheck() {
  have_gpu || { echo "no GPU: memcheck not run" | tee "$logs/memcheck.digest"; return 77; }
  local cs rc any=0 t errs d=""
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2> /dev/null | head -1)
  [ -n "$cs" ] || { echo "compute-sanitizer not found" | tee "$logs/memcheck.digest"; return 77; }
  for t in "test_kernels_head 12" "test_kernels_layers 20"; do
    timeout -k 3 "${t#* }" "$cs" --tool memcheck --error-exitcode 99 --print-limit 20 \
      "$root/tests/${t% *}" --gtest_filter='Cuda/*' > "$logs/memcheck_${t% *}.log" 2>&1
    rc=$?
    errs=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$logs/memcheck_${t% *}.log" | tail -1)
    if [ $rc = 0 ]; then d+="${t% *}: clean ($errs); "
    elif [ $rc = 99 ] || [[ $errs =~ [1-9] ]]; then d+="${t% *}: MEMCHECK ERRORS ($errs); "; any=1
    elif [ $rc = 124 ] || [ $rc = 137 ]; then d+="${t% *}: timed out; "; [ $any = 1 ] || any=2
    elif [ -n "$errs" ] && ! grep -q -E 'Internal Sanitizer Error|=+ Error: |not supported' "$logs/memcheck_${t% *}.log"; then
      d+="${t% *}: tests failed under memcheck, rc $rc ($errs); "; any=1
    else  # the sanitizer's own error (e.g. refused under gVisor): reported, not a test result
      d+="${t% *}: refused, rc $rc: $(grep -m1 -E 'Sanitizer Error|Error|error' "$logs/memcheck_${t% *}.log" | cut -c1-120); "
      [ $any = 1 ] || any=2
    fi
  done
  echo "$d" | tee "$logs/memcheck.digest"
  [ $any = 2 ] && return 77 || return $any
}
export -f step_memcheck
run_step memcheck bash -c step_memcheck

# ---- benchmarks: ours (short min time) then PyTorch's on the same weights, same card, same call.
bench_digest() {  # NAME: the result lines of a Google Benchmark log
  [ -f "$logs/$1.log" ] || return 0
  grep -E '^(BM_|[A-Za-z_]+/)' "$logs/$1.log" | grep -v 'ERROR OCCURRED' | cut -c1-160 | head -40
  local n; n=$(grep -c 'ERROR OCCURRED' "$logs/$1.log")
  [ "$n" = 0 ] || echo "  $n benchmarks skipped with an error, the first: $(grep -m1 -o 'ERROR OCCURRED.*' "$logs/$1.log" | cut -c1-140)"
  grep -E '^bench_[a-z_]*:|validat' "$logs/$1.log" | head -5 | cut -c1-160
}
run_step bench_kernels_cuda "$root/bench/bench_kernels_cuda" --benchmark_min_time=0.05 \
  --benchmark_out="$logs/bench_kernels_cuda.json" --benchmark_out_format=json
bench_digest bench_kernels_cuda
run_step bench_inception_cuda "$root/bench/bench_inception_cuda" --benchmark_min_time=0.2 \
  --benchmark_out="$logs/bench_inception_cuda.json" --benchmark_out_format=json
bench_digest bench_inception_cuda
run_step torch bash -c 'py "$@"' py "$repo/bench/gpu/torch_inception_gpu.py" --weights "$root/ref/inception_v3_1based.h5" \
  --json "$logs/torch.json"
[ -f "$logs/torch.log" ] && grep -E '^torch|skipped|Error' "$logs/torch.log" | head -12 | cut -c1-160

# ---- report: ours / PyTorch per mode, then the logs packed into one archive.
step_report() {
  py - "$logs" << 'PY'
import json, os, sys
logs = sys.argv[1]
try:
    ours = json.load(open(os.path.join(logs, "bench_inception_cuda.json")))["benchmarks"]
except Exception as e:
    print("ours: unavailable (%s)" % e); ours = []
try:
    torch = {r["mode"]: r for r in json.load(open(os.path.join(logs, "torch.json")))}
except Exception as e:
    print("torch: unavailable (%s)" % e); torch = {}
# label fp32_nchw / fp32_nhwc / tf32 / fp16 (+ "_host": input from host memory); batch from the name.
pair = {"fp32": ("fp32", 1.2), "tf32": ("tf32", 1.2), "fp16": ("fp16_compile", 1.3)}
for b in ours:
    if "img/s" not in b:
        continue
    label, batch = b.get("label", "?"), b["name"].split("batch:")[-1].split("/")[0]
    line = "ours %-16s batch %-4s %9.1f img/s" % (label, batch, b["img/s"])
    mode = label.split("_")[0]
    if batch == "1":
        ms = b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        line += "  %.3f ms per image (target <= 2 ms)" % ms
        if mode == "fp32" and "fp32_b1_graph" in torch:
            line += "; torch fp32 graph %.3f ms" % torch["fp32_b1_graph"]["ms_per_batch"]
    elif mode in pair and pair[mode][0] in torch:
        t, target = pair[mode]
        r = b["img/s"] / torch[t]["img_per_s"]
        line += "  vs torch %s %.1f: %.2fx (target %.1fx: %s)" % (
            t, torch[t]["img_per_s"], r, target, "met" if r >= target else "NOT met")
    print(line)
PY
}
export -f step_report
run_step report bash -c step_report
cat "$logs/report.log"

total=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
echo "run_device.sh: done in $total s (caps sum $(caps_sum) s x$scale)" | tee -a "$logs/summary.txt"
cp "$logs/summary.txt" "$OUT/summary.txt"
tar -C "$root" -cJf "$OUT/gpu_logs.tar.xz" logs
echo "run_device.sh: \$OUT has $(find "$OUT" -type f | wc -l) files: $(cd "$OUT" && ls | paste -sd' ')"
grep -q -E '^STEP [a-z_0-9]+ +(FAIL|TIMEOUT)' "$logs/summary.txt" && exit 1
exit 0
