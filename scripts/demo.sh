#!/usr/bin/env bash
# scripts/demo.sh: the main job on a fresh machine: install, build, generate the seeded test
# weights (PyTorch generator, ~1 minute the first time) and run the Inception v3 forward on
# generated images, printing the bottlenecks' shape and a checksum.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
/usr/bin/python3 tests/reference/make_reference.py --out build/reference
build/tools/inception_forward --weights build/reference/inception_v3_1based.h5 --images 8 --batch 4
