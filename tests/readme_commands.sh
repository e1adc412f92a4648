#!/usr/bin/env bash
# tests/readme_commands.sh BUILD_DIR REFERENCE_DIR: runs every `build/tools/...` command of the
# README's usage sections literally (continuation lines joined), in a scratch folder laid out as
# the commands expect: the ISIC 2016/2017/2018/2020 folder and CSV names (tiny generated sets),
# class folders of generated demo images, and the weight paths pointing at the generated random
# Keras-layout weights. Fails on the first command that fails or writes nothing.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
REF=$(cd "$2" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
ln -s "$BUILD" build
mkdir -p weights
ln -s "$REF/inception_v3_1based.h5" weights/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
ln -s "$REF/inception_v3_1based.h5" W.h5
FLAT=$REF/dataset/flat
for d in ISBI2016_ISIC_Part3_Training_Data ISIC-2017_Training_Data ISIC2018_Task3_Training_Input train; do
  mkdir -p "$d" && cp "$FLAT"/*.jpg "$d"/
done
cp "$REF/dataset/labels_2016.csv" ISBI2016_ISIC_Part3_Training_GroundTruth.csv
cp "$REF/dataset/labels_2017.csv" ISIC-2017_Training_Part3_GroundTruth.csv
cp "$REF/dataset/labels_2018.csv" ISIC2018_Task3_Training_GroundTruth.csv
cp "$REF/dataset/labels_2020.csv" ISIC_2020_Training_GroundTruth.csv
build/tools/make_demo_data --out demo --count 150 --seed 3 > /dev/null 2>&1
mv demo/images images
mkdir -p new_images && cp images/melanoma/ISIC_900000[0-9].jpg new_images/ 2>/dev/null || cp images/benign/*.jpg new_images/

# The commands, from the README's code blocks, in order.
mapfile -t CMDS < <(awk '/^```sh/{inblk=1; next} /^```/{inblk=0; next} inblk' "$SRC/README.md" |
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | sed 's/[[:space:]]*#.*$//' | grep -E '^build/tools/' || true)
[ ${#CMDS[@]} -ge 7 ] || { echo "expected >= 7 tool commands in README.md, found ${#CMDS[@]}"; exit 1; }
for c in "${CMDS[@]}"; do
  echo "+ $c"
  rc=0
  bash -c "$c --quiet" > out.txt 2> err.txt || rc=$?
  # 0 = all done; 3 = some files skipped (the ISIC folders hold the CSV-less files of other years).
  if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then cat out.txt err.txt; echo "README command failed with status $rc: $c"; exit 1; fi
  tail -n 3 out.txt
done
for f in cache.h5 isic2016.h5 isic2017.h5 isic2018.h5 isic2020.h5 run/head_keras.h5 run/report.html predictions.csv; do
  [ -s "$f" ] || { echo "README command did not write $f"; exit 1; }
done
head -n 2 predictions.csv | grep -q '^image,benign,melanoma$' || { echo "predictions.csv has no ISIC header"; exit 1; }
echo "all ${#CMDS[@]} README commands ran"
