#!/usr/bin/env bash
# bench/gpu/bundle.sh OUTDIR [SUBDIR=]FILE...: stages programs for a GPU machine that has the NVIDIA
# driver, the CUDA runtime, cuBLAS and cuDNN but none of our other libraries (HDF5, oneDNN,
# libjpeg, libpng, GoogleTest...). Each FILE (a program, or a data file or folder it needs) is
# copied into OUTDIR, or into OUTDIR/SUBDIR when written SUBDIR=FILE (so the programs keep the
# build's tests/ tools/ bench/ layout); every shared library the programs load is copied into
# OUTDIR/lib, except glibc, the driver and the CUDA libraries, which the GPU machine provides (and
# which are large). gpuenv.sh is copied beside them: `source OUTDIR/gpuenv.sh` there puts
# OUTDIR/lib and the machine's own cuDNN/cuBLAS on the loader path. Called by bench/gpu/stage.sh;
# prints the folder's size.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/gpu/bundle.sh OUTDIR [SUBDIR=]FILE..." >&2; exit 2; }
out=$1; shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out/lib"
cp "$here/gpuenv.sh" "$out/"
files=()
for arg in "$@"; do
  sub=.; f=$arg
  if [[ $arg == *=* ]]; then sub=${arg%%=*}; f=${arg#*=}; fi
  [ -e "$f" ] || { echo "bundle.sh: $f: no such file" >&2; exit 1; }
  mkdir -p "$out/$sub"
  # A program or file: what a link points to. A data folder: as it is (the test dataset holds a
  # deliberately broken link, which must travel as one).
  if [ -d "$f" ]; then cp -a "$f" "$out/$sub/"; else cp -L "$f" "$out/$sub/"; fi
  files+=("$f")
done
# ldd lists "name => /path (addr)" for each library a program loads; keep the paths.
for f in "${files[@]}"; do
  if [ -f "$f" ] && [ -x "$f" ]; then ldd "$f" 2>/dev/null | awk '/=> \//{print $3}'; fi
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*) ;;                 # glibc
    libstdc++.so*|libgcc_s.so*) ;;  # the GPU machine's (Ubuntu 24.04, GCC 14) are newer than ours
    libcuda.so*|libcudnn*|libcublas*|libcudart*|libnvrtc*|libnvJitLink*) ;;            # driver, CUDA
    libcurand*|libcufft*|libnccl*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
du -sh "$out"
