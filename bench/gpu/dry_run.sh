#!/usr/bin/env bash
# bench/gpu/dry_run.sh: proves the GPU run here, on a machine without a GPU, before any device time
# is spent: stages and packs (bench/gpu/stage.sh, which fails when what travels is over
# ENGINE_GPU_LIMIT_MIB, default 48 of the device call's 64 MiB), tests the archive, then runs
# bench/gpu/run_device.sh --dry-run into a temporary root and $OUT: every step's CPU part runs
# (the test programs with their GPU cases skipping, ENGINE_REQUIRE_GPU unset; the benchmarks'
# no-GPU lines; memcheck and the card step report 'no GPU'; the PyTorch script reads the weights
# and stops). Then checks what the device call needs: the step caps sum under 480 s, every step has
# a summary line and none FAILED or TIMED OUT, and $OUT holds at most 8 plain files of at most
# 16 MiB with names the device tool brings back.
# Usage: bash bench/gpu/dry_run.sh [BUILD_DIR]   (as stage.sh; default build-gpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu}
fail() { echo "dry_run.sh: FAILED: $*" >&2; exit 1; }

echo "== stage"
bash bench/gpu/stage.sh "$build"
xz -t .gpu/engine_gpu.tar.xz || fail "the archive does not test clean"
[ "$(find .gpu -type f | wc -l)" = 1 ] || fail ".gpu holds more than the archive: $(ls .gpu)"

echo "== step caps"
sum=$(bash bench/gpu/run_device.sh --caps | sed -n 's/^sum //p')
bash bench/gpu/run_device.sh --caps | paste -sd' '
[ "$sum" -lt 480 ] || fail "step caps sum to $sum s, not under 480"

tmp=$(mktemp -d /tmp/engine_gpu_dry.XXXXXX)
echo "== run_device.sh --dry-run (root $tmp/root, OUT $tmp/out)"
rc=0
OUT=$tmp/out bash bench/gpu/run_device.sh --dry-run --root "$tmp/root" || rc=$?

echo "== checks"
summary=$tmp/root/logs/summary.txt
[ -f "$summary" ] || fail "no summary"
steps=$(bash bench/gpu/run_device.sh --caps | grep -v '^sum' | cut -d' ' -f1)
for s in $steps; do grep -q "^STEP $s " "$summary" || fail "step $s has no summary line"; done
if grep -E '^STEP [a-z_0-9]+ +(FAIL|TIMEOUT)' "$summary"; then fail "steps above failed (run_device rc $rc)"; fi
[ "$rc" = 0 ] || fail "run_device.sh exited $rc"
n=$(find "$tmp/out" -mindepth 1 | wc -l)
[ "$n" -le 8 ] || fail "\$OUT holds $n entries (at most 8 files come back)"
find "$tmp/out" -mindepth 1 ! -type f | grep -q . && fail "\$OUT holds something other than plain files"
find "$tmp/out" -type f -size +16M | grep -q . && fail "a file in \$OUT is over 16 MiB"
find "$tmp/out" -type f | sed 's|.*/||' | grep -v -E '^[A-Za-z0-9._-]+$' && fail "a name in \$OUT would not come back"
tar -tJf "$tmp/out/gpu_logs.tar.xz" > /dev/null || fail "gpu_logs.tar.xz does not list"
echo "dry_run.sh: OK: caps $sum s < 480; \$OUT: $(cd "$tmp/out" && ls -l | awk 'NR > 1 { printf "%s (%d KiB) ", $9, $5 / 1024 }')"
rm -rf "$tmp"
