#!/usr/bin/env bash
# bench/peers_venv.sh: the benchmark's own Python environment for the peer runtimes
# (bench/peers_cpu.py): OpenVINO and ONNX Runtime from PyPI, with numpy and h5py to read the
# reference file. Pinned to the versions the side-by-side table in bench/README.md was measured
# with. Idempotent: an existing venv with these versions is left as it is.
#   bench/peers_venv.sh [VENV_DIR]     (default build/peers-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-build/peers-venv}
pins=(openvino==2026.4.1 onnxruntime==1.32.0 numpy==2.4.6 h5py==3.16.0)
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" - "${pins[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for p in sys.argv[1:]:
    name, want = p.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  echo "peers venv: $venv up to date (${pins[*]})"
  exit 0
fi
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "${pins[@]}"
echo "peers venv: $venv ready (${pins[*]})"
