# bench/gpu/gpuenv.sh: sourced on the GPU machine from a folder staged by bench/gpu/bundle.sh
# (`source .gpu/gpuenv.sh`). Puts the bundled libraries (lib/ beside this file) first on the
# loader path, then wherever that machine keeps cuDNN 9 and cuBLAS 13 (a PyTorch environment's
# site-packages or the CUDA toolkit: found by name, since the place differs between machines).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cudalibs=$(find / -xdev \( -name 'libcudnn.so.9' -o -name 'libcublas.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$here/lib:${cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
