#!/usr/bin/env bash
# weights/make_random_weights.sh [OUT]: writes seeded random Inception v3 weights in the exact
# Keras HDF5 layout (default weights/random_inception_v3.h5), for the demo and the tests when the
# real ImageNet file is absent. The BN statistics are calibrated so activations stay unit-scale;
# the file carries the attribute `engine_random_weights`, and every tool warns loudly on it.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 tests/reference/make_reference.py --weights-only "${1:-weights/random_inception_v3.h5}"
