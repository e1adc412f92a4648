#!/usr/bin/env bash
# bench/gpu/stage.sh: run on the build machine (no GPU needed) before a GPU run: builds the CUDA
# test and benchmark programs for Hopper and stages them with bench/gpu/bundle.sh into .gpu/
# (ignored through .git/info/exclude): the programs, the shared libraries they load that a bare
# GPU machine lacks, and bench/gpu/gpuenv.sh. The repository's tracked files plus .gpu/ are all
# the GPU machine gets; bench/gpu/run_device.sh runs there. No weight or reference files are
# shipped: what travels must stay under 64 MiB and the reference weights alone are ~90 MB each, so
# run_device.sh regenerates them there with tests/reference/make_reference.py (python3 + torch +
# h5py on that machine). Needs nothing outside the repository.
# Usage: bash bench/gpu/stage.sh [BUILD_DIR]   (default build; configured Release, archs 90)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90
fi
cmake --build "$build" -j"$(nproc)" --target test_inception_cuda test_head bench_inception_cuda bench_head
progs=("$build/tests/test_inception_cuda" "$build/tests/test_head" "$build/bench/bench_inception_cuda" "$build/bench/bench_head")
for p in "${progs[@]}"; do [ -x "$p" ] || { echo "stage.sh: missing $p (is it in the CMakeLists?)" >&2; exit 1; }; done
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu
bash bench/gpu/bundle.sh .gpu "${progs[@]}"
size_kb=$(du -sk .gpu | cut -f1)
tree_kb=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
echo "stage.sh: .gpu is $((size_kb / 1024)) MiB, tracked tree $((tree_kb / 1024)) MiB (limit 64 MiB in all)"
if [ $((size_kb + tree_kb)) -gt $((60 * 1024)) ]; then
  echo "stage.sh: WARNING: close to or over the 64 MiB that a device call can carry" >&2
fi
echo "next: run(command=\"bash bench/gpu/run_device.sh\", carry=[\".gpu\"], timeout_s=600)"
