#!/usr/bin/env bash
# bench/gpu/stage.sh: run on the build machine (no GPU needed) before the GPU run. Builds only the
# programs bench/gpu/run_device.sh runs, for Hopper (-DCMAKE_CUDA_ARCHITECTURES=90) and for a
# baseline x86-64 level (-DENGINE_MARCH=x86-64-v3: the GPU machine is another processor than this
# one), stages them with bench/gpu/bundle.sh (the programs in the build's tests/ tools/ bench/
# layout, the shared libraries a bare GPU machine lacks, gpuenv.sh) plus the fixture data the GPU
# tests read (reference.h5 and dataset/ of the reference dir), and packs it all into ONE archive,
# .gpu/engine_gpu.tar.xz (ignored through .git/info/exclude), which run_device.sh unpacks into
# /tmp there. The Inception weight file (92 MB, random floats: it does not compress) does not
# travel: run_device.sh regenerates it there with make_reference.py --weights-only (same seed,
# same bytes). What travels (tracked files + .gpu) must stay under the device call's 64 MiB:
# printed, and over ENGINE_GPU_LIMIT_MIB (default 48) is an error.
# Usage: bash bench/gpu/stage.sh [BUILD_DIR]   (default build-gpu; configured here if it is new)
#   ENGINE_REFERENCE_DIR: the reference dir to take the fixtures from (default BUILD_DIR/reference,
#   generated with the repository's tests/reference/make_reference.py and make_dataset.py if absent).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu}
limit_mib=${ENGINE_GPU_LIMIT_MIB:-48}
ref=${ENGINE_REFERENCE_DIR:-$build/reference}
py=${ENGINE_TORCH_PYTHON:-/usr/bin/python3}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DENGINE_MARCH=x86-64-v3 -DENGINE_BUILD_BENCH=ON -DENGINE_REFERENCE_DIR="$(realpath -m "$ref")"
fi
# An existing build dir must already be a traveling build: refuse a native or CPU-only one.
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
[ "$(cache ENGINE_MARCH)" != native ] && [ -n "$(cache ENGINE_MARCH)" ] ||
  { echo "stage.sh: $build is built with -march=$(cache ENGINE_MARCH); configure it with -DENGINE_MARCH=x86-64-v3" >&2; exit 1; }
[[ " $(cache CMAKE_CUDA_ARCHITECTURES | tr ';' ' ') " == *" 90 "* ]] ||
  { echo "stage.sh: $build has no CUDA or no arch 90 (CMAKE_CUDA_ARCHITECTURES='$(cache CMAKE_CUDA_ARCHITECTURES)')" >&2; exit 1; }
[ "$(cache ENGINE_BUILD_BENCH)" = ON ] || { echo "stage.sh: $build has ENGINE_BUILD_BENCH=OFF" >&2; exit 1; }

# The GPU test programs run_device.sh names, plus every test_*cuda* program tests/CMakeLists.txt
# defines (run whole by its test_cuda_more step), so a new GPU test travels without an edit here.
tests=(test_cuda test_kernels_head test_kernels_layers test_head test_inception_cuda test_extract test_predict test_train)
for t in $(grep -oE '^ *engine_add_test\(test_[A-Za-z0-9_]*cuda[A-Za-z0-9_]*' tests/CMakeLists.txt | sed 's/.*(//'); do
  [[ " ${tests[*]} " == *" $t "* ]] || tests+=("$t")
done
tools=(extract predict train)
benches=(bench_kernels_cuda bench_inception_cuda)
cmake --build "$build" -j"$(nproc)" --target "${tests[@]}" "${tools[@]}" "${benches[@]}"

if [ ! -f "$ref/reference.h5" ] || [ ! -d "$ref/dataset" ]; then
  "$py" tests/reference/make_reference.py --out "$ref"
  "$py" tests/reference/make_dataset.py --out "$ref/dataset"
fi

stage="$build/gpu_stage"  # uncompressed, in the build dir: it does not travel
rm -rf "$stage"
args=()
for t in "${tests[@]}"; do args+=("tests=$build/tests/$t"); done
for t in "${tools[@]}"; do args+=("tools=$build/tools/$t"); done
for b in "${benches[@]}"; do args+=("bench=$build/bench/$b"); done
bash bench/gpu/bundle.sh "$stage" "${args[@]}" "ref=$ref/reference.h5" "ref=$ref/dataset" > /dev/null
# The programs name the build and source dirs they were compiled in (ENGINE_BINARY_DIR: the tests
# run the tools from there); run_device.sh links those paths to the unpacked bundle and checkout.
{
  echo "ENGINE_STAGED_BINARY_DIR=$(realpath "$build")"
  echo "ENGINE_STAGED_SOURCE_DIR=$(pwd)"
  echo "ENGINE_STAGED_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo +dirty)"
  echo "ENGINE_STAGED_MARCH=$(cache ENGINE_MARCH)"
} > "$stage/staged.env"
(cd "$stage" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2 > MANIFEST)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu
mkdir -p .gpu
# xz: the GPU machine (Ubuntu 24.04) has xz, and zstd may be missing there. A 64 MiB dictionary
# holds several programs at once, so the engine code they all link is stored about once.
XZ_OPT="-6 -T0 --lzma2=preset=6,dict=64MiB" tar -C "$stage" -cJf .gpu/engine_gpu.tar.xz .

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
raw=$(du -sb "$stage" | cut -f1)
packed=$(stat -c %s .gpu/engine_gpu.tar.xz)
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
total=$((packed + tracked + untracked))
echo "stage.sh: bundle $(mib "$raw") MiB unpacked -> .gpu/engine_gpu.tar.xz $(mib "$packed") MiB;" \
  "tracked files $(mib "$tracked") MiB, untracked not ignored $(mib "$untracked") MiB;" \
  "travels $(mib "$total") MiB (limit 64, margin $limit_mib)"
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
  echo "stage.sh: what travels is $(mib "$total") MiB, over the $limit_mib MiB margin" >&2
  exit 1
fi
echo "next: run(command=\"bash bench/gpu/run_device.sh\", carry=[\".gpu\"], timeout_s=540)"
