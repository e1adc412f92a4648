# shellcheck shell=bash
# bench/gpu/gpuenv.sh: sourced on the GPU machine from a folder staged by bench/gpu/bundle.sh
# (`source DIR/gpuenv.sh`). Puts the bundled libraries (lib/ beside this file) first on the
# loader path, then wherever that machine keeps cuDNN 9 and cuBLAS 13 (a PyTorch environment's
# site-packages or the CUDA toolkit: found by name, since the place differs between machines).
# /opt and /usr first (where the device image keeps them; sorted, /opt's newer cuDNN 9.19 wins
# over /usr's 9.14), the whole disk only when neither has them.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gpuenv_find() { find "$@" -xdev \( -name 'libcudnn.so.9' -o -name 'libcublas.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:; }
cudalibs=$(gpuenv_find /opt /usr)
[ -n "$cudalibs" ] || cudalibs=$(gpuenv_find /)
export LD_LIBRARY_PATH="$here/lib:${cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
