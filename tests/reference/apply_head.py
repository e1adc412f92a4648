#!/usr/bin/env python3
"""tests/reference/apply_head.py: an independent check of tools/predict's CSV, in numpy (float64)
with h5py; no engine code. Run with Debian's /usr/bin/python3 by tests/test_predict.cpp:
    apply_head.py --cache CACHE.h5 --head HEAD.h5 --csv PREDICTIONS.csv [--atol 1e-6] [--rtol 1e-4] [--min-unsaturated N]
Reads the features tools/extract cached (/features, /paths), the head's Dense layers from the
Keras file (/model_weights/<layer>/<weight_names>, relu hidden, softmax output), applies them to
the features and compares with the CSV, parsed with Python's csv module: the header must be
image,<class_names...>, every row exactly 1 + K fields, one row per cached image whose id is the
file name without its image extension (img.v1.jpg -> img.v1, scan.v2 stays; ids unique), every
probability within --atol + --rtol * numpy and its complement 1 - p within 1.8e-7 +
--rtol * (1 - numpy); optionally >= --min-unsaturated of them in (0.01, 0.99).
Exit 0 on a match, 1 otherwise."""
import argparse
import csv
import os
import sys

import h5py
import numpy as np


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


COMPLEMENT_ATOL = 3 * 2.0 ** -24  # 3 float32 ulps just below 1


def image_id(name):
    """The file name without an image extension (any case); other dots stay: scan.v2 -> scan.v2."""
    stem, ext = os.path.splitext(name)
    return stem if stem and ext.lower() in IMAGE_EXTENSIONS else name


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--atol", type=float, default=1e-6)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--min-unsaturated", type=int, default=0,
                    help="at least this many numpy probabilities must lie in (0.01, 0.99)")
    a = ap.parse_args()
    with h5py.File(a.cache, "r") as f:
        x = f["features"][:].astype(np.float64)
        paths = [text(p) for p in f["paths"][:]]
    with h5py.File(a.head, "r") as f:
        g = f["model_weights"]
        layers = []
        for name in g.attrs["layer_names"]:
            name = text(name)
            wn = [text(w) for w in g[name].attrs["weight_names"]]
            if not wn:
                continue
            layers.append((g[name][wn[0]][:].astype(np.float64), g[name][wn[1]][:].astype(np.float64)))
        class_names = [text(c) for c in f.attrs["class_names"]]
    h = x
    for i, (k, b) in enumerate(layers):
        h = h @ k + b
        if i + 1 < len(layers):
            h = np.maximum(h, 0)
    h = h - h.max(axis=1, keepdims=True)
    want = np.exp(h) / np.exp(h).sum(axis=1, keepdims=True)

    with open(a.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    errors = []
    if not rows or rows[0] != ["image"] + class_names:
        errors.append("header %r, expected %r" % (rows[0] if rows else None, ["image"] + class_names))
    got = {}
    for r in rows[1:]:
        if len(r) != 1 + len(class_names):
            errors.append("ragged row %r: %d fields, expected %d" % (r, len(r), 1 + len(class_names)))
            continue
        if r[0] in got:
            errors.append("id %r twice" % r[0])
        got[r[0]] = np.array([float(v) for v in r[1:]])
    worst, worst_rel, where = -1.0, 0.0, None  # worst: largest |diff| - (atol + rtol * want)
    for i, p in enumerate(paths):
        iid = image_id(os.path.basename(p))
        if iid not in got:
            errors.append("no row for %r (id %r); rows: %r" % (p, iid, sorted(got)))
            continue
        d = np.abs(got[iid] - want[i])
        excess = d - (a.atol + a.rtol * want[i])
        # Near 1 what a ranking sees is 1 - p: bound it by 3 float32 ulps at 1 plus the same
        # relative error (a print to 6 significant digits, 0.9999994 -> 0.999999, fails this).
        excess = np.maximum(excess, d - (COMPLEMENT_ATOL + a.rtol * (1.0 - want[i])))
        worst_rel = max(worst_rel, float((d / np.maximum(want[i], 1e-300)).max()))
        if where is None or excess.max() > worst:
            worst, where = float(excess.max()), (iid, got[iid].tolist(), want[i].tolist())
    if len(got) != len(paths):
        errors.append("%d rows for %d cached images" % (len(got), len(paths)))
    in_mid = int(((want > 0.01) & (want < 0.99)).sum())
    max_abs = max([float(np.abs(got[image_id(os.path.basename(p))] - want[i]).max())
                   for i, p in enumerate(paths) if image_id(os.path.basename(p)) in got] or [0.0])
    print("%s: %d rows x %d classes, max |predict - numpy float64| %.3g, max relative %.3g "
          "(tolerance %g + %g * numpy; closest to it: %s); %d of %d probabilities in (0.01, 0.99)"
          % (a.csv, len(got), len(class_names), max_abs, worst_rel, a.atol, a.rtol, where,
             in_mid, want.size))
    if worst > 0:
        errors.append("a probability off by more than %g + %g * numpy: %s" % (a.atol, a.rtol, where))
    if in_mid < a.min_unsaturated:
        errors.append("only %d probabilities in (0.01, 0.99), expected >= %d: the check would not "
                      "test unsaturated numbers" % (in_mid, a.min_unsaturated))
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
