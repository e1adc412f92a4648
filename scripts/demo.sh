#!/usr/bin/env bash
# scripts/demo.sh: the main job on a fresh machine, no GPU and no downloads needed:
# install, build, generate seeded random Keras-layout Inception weights (the real ImageNet file
# is used instead when weights/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 exists),
# generate the synthetic demo images, extract their bottlenecks, train the head, print the test
# metrics and where the report is. About 3-5 minutes on 2 cores (most of it the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_TARGETS="make_demo_data extract train predict inception_forward" scripts/build.sh
DEMO=build/demo
REAL=weights/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
if [ -f "$REAL" ]; then
  WEIGHTS=$REAL
else
  WEIGHTS=weights/random_inception_v3.h5
  weights/make_random_weights.sh "$WEIGHTS"
fi
build/tools/make_demo_data --out "$DEMO" --count "${DEMO_IMAGES:-300}" --seed 1
build/tools/extract --images "$DEMO/images" --weights "$WEIGHTS" --out "$DEMO/cache.h5"
build/tools/train --cache "$DEMO/cache.h5" --out "$DEMO/run" --steps 1000 --eval-every 100 \
  --learning-rate 1e-4 --class-weights balanced --restart
echo "open $DEMO/run/report.html in a browser for the curves and the ROC"
