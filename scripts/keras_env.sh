#!/usr/bin/env bash
# scripts/keras_env.sh [VENV]: makes the Keras reference environment (default build/keras-venv):
# a virtual environment of Debian's /usr/bin/python3 with tensorflow-cpu and tf-keras from PyPI,
# pinned, used only by the tests that take Keras/TensorFlow itself as the judge (weight files,
# the head file, preprocessing, the TF1 RMSProp optimizer). Made once; a stamp file records the
# pins, so a rerun with the same pins does no network work. Prints the venv's python path last.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-build/keras-venv}
PINS=(tensorflow-cpu==2.21.0 tf-keras==2.21.0 h5py numpy pillow)
STAMP="$VENV/.engine-pins"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${PINS[*]}" ]; then
  echo "keras_env: $VENV ready (${PINS[*]})" >&2
else
  echo "keras_env: creating $VENV with ${PINS[*]} (pip, about 1-2 minutes once)" >&2
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "${PINS[@]}" >&2
  "$VENV/bin/python" -c 'import tensorflow as tf, tf_keras; print("keras_env: tensorflow", tf.__version__, "tf_keras", tf_keras.__version__)' >&2
  echo "${PINS[*]}" > "$STAMP"
fi
echo "$VENV/bin/python"
