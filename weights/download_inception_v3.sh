#!/usr/bin/env bash
# weights/download_inception_v3.sh: fetches the published Keras InceptionV3 ImageNet weights
# (no top) from the same place keras-applications downloads them, and checks the md5 Keras
# records for it. Needs internet (the dev/CI machines here have none; run it elsewhere and copy
# the file into weights/).
set -euo pipefail
cd "$(dirname "$0")"
NAME=inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
MD5=bcbd6486424b2319ff4ef7d526e38f63
URL=https://github.com/fchollet/deep-learning-models/releases/download/v0.5/$NAME
if [ ! -f "$NAME" ]; then
  curl -fL --retry 3 -o "$NAME.part" "$URL"
  mv "$NAME.part" "$NAME"
fi
echo "$MD5  $NAME" | md5sum -c -
echo "weights/$NAME is the published Keras file; tools use it when given --weights weights/$NAME"
