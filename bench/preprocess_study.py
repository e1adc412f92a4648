"""How much do the two preprocessing choices of tools/extract move the bottleneck, and what do they buy?

(i)  --resize antialias (default; = PIL BILINEAR = torch F.interpolate(antialias=True)) vs bilinear
     (2x2 taps, = TF2 tf.image.resize / torch antialias=False);
(ii) --dct-scale true (libjpeg decodes at 1/2 or 1/4 scale while both sides stay >= 299) vs
     false (full decode; the default since this study, bench/README.md).
On the two sets of bench/extract_e2e.py (600x450 and 1024x1024 q90 JPEG, --count images each,
made once under --workdir), OUR extract runs every variant on a fresh cache (--rounds times,
interleaved; wall time of the whole process -> img/s), and the caches are compared per image:
  rel. L2   ||a - b|| / ||b||                        (b = the reference of the pair)
  cosine    a.b / (|a| |b|)
  d/inter   ||a - b|| / median_j ||b_i - b_j||       (the difference against how far apart two
                                                      different images of the set are; needed
                                                      because the weights are random: cosine of
                                                      post-ReLU averages is near 1 for any pair)
Pairs: DCT on vs off (same filter), bilinear vs antialias (same decode), and every variant vs an
"ideal" reference computed here: PIL full decode -> float64 torch F.interpolate(bilinear,
antialias=True) -> /127.5 - 1 -> the same network in PyTorch (KerasInceptionV3, float32). Ours
with antialias + full decode vs ideal is therefore the floor (float32 resize and network
differences only). Also the PIL pipeline (resize BILINEAR to 8 bits, as in extract_e2e.py) vs
ideal, for scale. Later rounds must give bit-identical caches (checked).
Run: /usr/bin/python3 bench/preprocess_study.py [--count 96] [--rounds 2] [--json OUT]
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from extract_e2e import (ROOT, TorchModel, common_args, common_setup, compare, list_images,  # noqa: E402
                         pil_bilinear_tensor, prepare_sets, read_features, remove_cache, run_ours)

VARIANTS = [
    ("antialias+DCT", ["--resize", "antialias", "--dct-scale", "true"]),
    ("antialias+full", ["--resize", "antialias", "--dct-scale", "false"]),
    ("bilinear+DCT", ["--resize", "bilinear", "--dct-scale", "true"]),
    ("bilinear+full", ["--resize", "bilinear", "--dct-scale", "false"]),
]


def ideal_tensor(path):
    a = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].double()
    r = F.interpolate(a, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
    return (r[0] / 127.5 - 1.0).float()


def torch_features(model, images, to_tensor, batch):
    rels = list_images(images)
    out = []
    for s in range(0, len(rels), batch):
        x = torch.stack([to_tensor(os.path.join(images, r)) for r in rels[s:s + batch]])
        out.append(model.features(x))
    return rels, torch.cat(out).double().numpy()


def metrics(a, b):
    rel, cos = compare(a, b)
    d = np.linalg.norm(b[:, None, :] - b[None, :, :], axis=2)
    np.fill_diagonal(d, np.nan)
    inter = np.nanmedian(d, axis=1)
    dr = np.linalg.norm(a - b, axis=1) / inter
    return dict(rel_l2_mean=float(rel.mean()), rel_l2_max=float(rel.max()),
                cos_mean=float(cos.mean()), cos_min=float(cos.min()),
                d_inter_mean=float(dr.mean()), d_inter_max=float(dr.max()),
                identical=bool(np.array_equal(a, b)))


def main():
    ap = common_args(__doc__)
    ap.add_argument("--no-reference", action="store_true", help="skip the PyTorch ideal reference")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    weights, workdir = common_setup(a)
    sets = prepare_sets(a.build, workdir, a.count)

    speed = {}   # (set, variant) -> [img/s]
    feats = {}   # (set, variant) -> features of round 1
    paths = {}
    nondet = []
    load = []
    for rnd in range(a.rounds):
        for set_name, d in sets.items():
            n = len(list_images(d))
            order = VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]
            for name, flags in order:
                cache = os.path.join(workdir, "study_cache.h5")
                load.append(os.getloadavg()[0])
                sec = run_ours(a.build, weights, d, cache, flags, expect=n)
                speed.setdefault((set_name, name), []).append(n / sec)
                p, f = read_features(cache)
                if rnd == 0:
                    feats[(set_name, name)], paths[set_name] = f, p
                elif not np.array_equal(f, feats[(set_name, name)]):
                    nondet.append((set_name, name))
                print("round %d %-9s %-24s %6.2f img/s  (load avg %.2f)" %
                      (rnd + 1, set_name, name, n / sec, load[-1]), flush=True)
                remove_cache(cache)

    refs = {}
    if not a.no_reference:
        t0 = time.perf_counter()
        model = TorchModel(weights, "eager_cl", a.batch)
        for set_name, d in sets.items():
            for rname, fn in (("ideal (float64 antialias)", ideal_tensor),
                              ("PIL BILINEAR 8-bit", pil_bilinear_tensor)):
                rels, f = torch_features(model, d, fn, a.batch)
                assert rels == paths[set_name], "path order differs from the cache"
                refs[(set_name, rname)] = f
        print("PyTorch references computed in %.1f s" % (time.perf_counter() - t0), flush=True)

    rows = []

    def pair(set_name, an, bn, a_f, b_f):
        m = metrics(a_f, b_f)
        m.update(set=set_name, a=an, b=bn)
        rows.append(m)

    for set_name in sets:
        V = {n: feats[(set_name, n)] for n, _ in VARIANTS}
        pair(set_name, "antialias+DCT", "antialias+full", V["antialias+DCT"], V["antialias+full"])
        pair(set_name, "bilinear+DCT", "bilinear+full", V["bilinear+DCT"], V["bilinear+full"])
        pair(set_name, "bilinear+full", "antialias+full", V["bilinear+full"], V["antialias+full"])
        pair(set_name, "bilinear+DCT", "antialias+DCT", V["bilinear+DCT"], V["antialias+DCT"])
        if refs:
            ideal = refs[(set_name, "ideal (float64 antialias)")]
            for n, _ in VARIANTS:
                pair(set_name, "ours " + n, "ideal", V[n], ideal)
            pair(set_name, "PyTorch PIL BILINEAR 8-bit", "ideal", refs[(set_name, "PIL BILINEAR 8-bit")], ideal)

    print("\nbottleneck differences, %d images per set (a vs reference b)" % a.count)
    print("| set | a | b | rel. L2 mean | rel. L2 max | cosine mean | cosine min | d/inter mean | d/inter max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["identical"]:
            print("| %s | %s | %s | 0 (bit-identical) | 0 | 1 | 1 | 0 | 0 |" % (r["set"], r["a"], r["b"]))
        else:
            print("| %s | %s | %s | %.2e | %.2e | %.7f | %.7f | %.2e | %.2e |" % (
                r["set"], r["a"], r["b"], r["rel_l2_mean"], r["rel_l2_max"], r["cos_mean"],
                r["cos_min"], r["d_inter_mean"], r["d_inter_max"]))
    print("\nspeed of ours, whole process, %d rounds (median img/s, min..max)" % a.rounds)
    print("| set | variant | img/s | min..max |")
    print("| --- | --- | --- | --- |")
    for (set_name, name), v in speed.items():
        print("| %s | %s | %.2f | %.2f..%.2f |" % (set_name, name, statistics.median(v), min(v), max(v)))
    print("later rounds bit-identical to round 1: %s" % ("yes" if not nondet else "NO: %s" % nondet))
    print("load average during the runs: %.2f..%.2f" % (min(load), max(load)))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(count=a.count, rounds=a.rounds, pairs=rows,
                           speed=[dict(set=k[0], variant=k[1], img_per_s=v) for k, v in speed.items()],
                           nondeterministic=nondet, load_avg=load), fh, indent=1)


if __name__ == "__main__":
    main()
