#!/usr/bin/env python3
"""tests/reference/make_dataset.py: a tiny ISIC-like image set for the tools/extract tests,
written with PIL (independent of the engine). Run with Debian's /usr/bin/python3:
    /usr/bin/python3 tests/reference/make_dataset.py --out build/reference/dataset [--n 16]
Writes
  classes/benign/ISIC_00000NN.jpg, classes/melanoma/...   class folders (600x450 q90, some PNG)
  flat/ISIC_00000NN.jpg                                   the same images in one folder
  labels_2016.csv (no header: id,benign|malignant), labels_2017.csv (image_id,melanoma,
  seborrheic_keratosis), labels_2018.csv (one-hot image,MEL,NV,...), labels_2019.csv (one-hot
  image,MEL,...,SCC,UNK), labels_2020.csv (the 2020 v2 header image_name,patient_id,lesion_id,
  ...,benign_malignant,target: two images per patient, one lesion id per image),
  ham10000_metadata.csv (lesion_id,image_id,dx,dx_type,age,sex,localization)
  bad/ : class folders holding good images and every kind of bad file (see BAD below)
A file `done` marks a complete directory; a rerun with the same --n does nothing."""
import argparse
import io
import os
import shutil
import sys

import numpy as np
from PIL import Image

VERSION = "2"


def lesion(rng, w=600, h=450, malignant=False):
    """Smooth skin-tone background with a brown blob; melanoma-like ones are irregular, multi-colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    skin = np.array([220, 180, 150]) + rng.normal(0, 8, 3)
    img = np.ones((h, w, 3)) * skin
    cx, cy = w / 2 + rng.normal(0, 30), h / 2 + rng.normal(0, 20)
    ang = np.arctan2(yy - cy, xx - cx)
    r = 90 + rng.normal(0, 10)
    if malignant:
        border = r * (1 + 0.25 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.15 * np.sin(7 * ang))
    else:
        border = r * (1 + 0.05 * np.sin(2 * ang))
    d = np.hypot(xx - cx, yy - cy) / border
    mask = np.clip(1.5 - d, 0, 1)[..., None]
    brown = np.array([120, 70, 40]) + rng.normal(0, 10, 3)
    if malignant:
        blue = np.array([90, 100, 140])
        mix = (0.5 + 0.5 * np.sin(xx / 23 + rng.uniform(0, 6)))[..., None]
        brown = brown * mix + blue * (1 - mix)
    img = img * (1 - mask) + brown * mask
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def atomic_bytes(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def jpeg_bytes(img, q=90):
    b = io.BytesIO()
    img.save(b, "JPEG", quality=q)
    return b.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    done = os.path.join(a.out, "done")
    if os.path.exists(done) and open(done).read() == "%s n=%d seed=%d" % (VERSION, a.n, a.seed):
        return
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    rng = np.random.default_rng(a.seed)
    for d in ("classes/benign", "classes/melanoma", "flat", "bad/benign", "bad/melanoma", "bad/empty_class"):
        os.makedirs(os.path.join(a.out, d))
    ids = []
    for i in range(a.n):
        mal = i % 4 == 0  # 25% melanoma
        img = lesion(rng, malignant=mal)
        iid = "ISIC_%07d" % i
        data = jpeg_bytes(img)
        if i == 3:  # one PNG, to exercise the format switch
            b = io.BytesIO()
            img.save(b, "PNG")
            data = b.getvalue()
        cls = "melanoma" if mal else "benign"
        atomic_bytes(os.path.join(a.out, "classes", cls, iid + ".jpg"), data)
        atomic_bytes(os.path.join(a.out, "flat", iid + ".jpg"), data)
        if i < 6:
            atomic_bytes(os.path.join(a.out, "bad", cls, iid + ".jpg"), data)
        ids.append((iid, mal))
    flat = a.out  # the CSVs sit beside the image folder, as ISIC ships them
    with open(os.path.join(flat, "labels_2016.csv"), "w") as f:
        for iid, mal in ids:
            f.write("%s,%s\n" % (iid, "malignant" if mal else "benign"))
    with open(os.path.join(flat, "labels_2017.csv"), "w") as f:
        f.write("image_id,melanoma,seborrheic_keratosis\n")
        for k, (iid, mal) in enumerate(ids):
            f.write("%s,%.1f,%.1f\n" % (iid, 1.0 if mal else 0.0, 1.0 if (not mal and k % 3 == 1) else 0.0))
    # One-hot CSVs: melanoma in column MEL, a benign image in NV (odd k) or in the column named.
    for year, classes, even_benign in (("2018", "MEL,NV,BCC,AKIEC,BKL,DF,VASC", "BKL"),
                                       ("2019", "MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK", "SCC")):
        names = classes.split(",")
        with open(os.path.join(flat, "labels_%s.csv" % year), "w") as f:
            f.write("image," + classes + "\n")
            for k, (iid, mal) in enumerate(ids):
                row = [0.0] * len(names)
                row[names.index("MEL" if mal else ("NV" if k % 2 else even_benign))] = 1.0
                f.write(iid + "," + ",".join("%.1f" % v for v in row) + "\n")
    with open(os.path.join(flat, "labels_2020.csv"), "w") as f:
        f.write("image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
                "benign_malignant,target\n")
        for k, (iid, mal) in enumerate(ids):
            f.write("%s,IP_%07d,IL_%07d,male,45.0,torso,%s,%s,%d\n" % (
                iid, k // 2, k, "melanoma" if mal else "nevus", "malignant" if mal else "benign", int(mal)))
    with open(os.path.join(flat, "ham10000_metadata.csv"), "w") as f:
        f.write("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
        for k, (iid, mal) in enumerate(ids):
            f.write("HAM_%07d,%s,%s,histo,45.0,male,back\n" % (k // 2, iid, "mel" if mal else "nv"))
    # Bad files (each must be skipped with one line naming it and the reason).
    bad = os.path.join(a.out, "bad", "benign")
    good = jpeg_bytes(lesion(rng))
    atomic_bytes(os.path.join(bad, "zero_bytes.jpg"), b"")
    atomic_bytes(os.path.join(bad, "truncated.jpg"), good[: len(good) * 6 // 10])
    atomic_bytes(os.path.join(bad, "text.jpg"), b"this is not an image\n" * 20)
    atomic_bytes(os.path.join(bad, "riff.webp"), b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40)
    b = io.BytesIO()
    lesion(rng, 64, 48).save(b, "TIFF")
    atomic_bytes(os.path.join(bad, "scan.tiff"), b.getvalue())
    os.symlink("does_not_exist.jpg", os.path.join(bad, "broken_link.jpg"))
    # A PNG with a .jpg name and a JPEG with a .png name are fine: the format is read from the bytes.
    b = io.BytesIO()
    lesion(rng).save(b, "PNG")
    atomic_bytes(os.path.join(a.out, "bad", "melanoma", "png_named.jpg"), b.getvalue())
    atomic_bytes(os.path.join(a.out, "bad", "melanoma", "jpeg_named.png"), good)
    atomic_bytes(done, ("%s n=%d seed=%d" % (VERSION, a.n, a.seed)).encode())


if __name__ == "__main__":
    sys.exit(main())
