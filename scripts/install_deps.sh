#!/usr/bin/env bash
# scripts/install_deps.sh: installs the Debian packages the engine needs, only those missing
# (so a ready machine does no network work). Nothing is downloaded from anywhere but Debian.
set -euo pipefail
# ocl-icd-opencl-dev: dnnl-config.cmake calls find_package(OpenCL REQUIRED), but libdnnl-dev only
# Recommends it, and we install with --no-install-recommends.
# python3-venv + python3-pip: the Keras reference environment (scripts/keras_env.sh) is a venv.
PKGS=(cmake make g++ pkg-config libhdf5-dev libssl-dev libdnnl-dev ocl-icd-opencl-dev libcli11-dev libgtest-dev
      libbenchmark-dev libjpeg62-turbo-dev libpng-dev python3-torch python3-h5py python3-numpy
      python3-pil python3-venv)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
