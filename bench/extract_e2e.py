"""End-to-end CPU throughput of build/tools/extract against a plain PyTorch/PIL pipeline.

Two ISIC-like sets of --count images (default 96), made once under --workdir and reused:
  600x450   q90 JPEG from build/tools/make_demo_data (HAM10000 shape);
  1024x1024 q90 JPEG (4:2:0) made with PIL from the same demo images: bicubic upscale to
            1366x1024, centre crop, plus seeded Gaussian grain (sigma 2.5, as make_demo_data
            adds at its native size) so the upscale is not unrealistically smooth.
Per round and per set, interleaved (the order flips every round):
  ours    build/tools/extract --images SET --weights W --out FRESH.h5 --quiet --dct-scale true
          (--resize antialias, --batch 32, workers = cores: the defaults; DCT scaling is asked for
          explicitly, as it was the default when the published numbers were taken); wall time of the whole
          process: weight loading, SHA-256 of every file, decode, resize, network, journal, final
          HDF5 write. For 1024x1024 also with --dct-scale false.
  torch   same files, sorted: PIL Image.open + convert('RGB') + resize((299, 299), BILINEAR) ->
          float tensor / 127.5 - 1, batches of 32, KerasInceptionV3 (tests/reference/
          torch_inception.py, bottleneck only) in eager channels_last (--torch-mode auto times it
          against torch.jit.freeze(trace) once at start-up and keeps the faster; on this VM eager
          won, 5.8 vs 6.7 s per batch of 32, and auto costs ~40 s), torch.set_num_threads(--threads),
          decode on the calling thread (no DataLoader workers). Timed from the file list to the
          last bottleneck; model construction / tracing is NOT counted (reported separately), so
          the ratio is conservative for ours, whose wall time includes its ~2 s start-up.
Also reported: ours on a single image (its fixed start-up cost), and a sanity check that the two
pipelines compute the same thing (cosine / relative L2 between ours and torch's bottlenecks: they
differ only by PIL's 8-bit rounding after its resize).
Run: /usr/bin/python3 bench/extract_e2e.py [--count 96] [--rounds 2] [--json OUT]
Prints one table: median images/s over the rounds, min..max, and ours/torch per set.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import torch_inception as ti  # noqa: E402


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
def list_images(d):
    """Relative '/'-separated paths of the .jpg files under d, sorted (= the cache's key order)."""
    out = []
    for dp, _, fs in os.walk(d):
        for f in fs:
            if f.lower().endswith(".jpg"):
                out.append(os.path.relpath(os.path.join(dp, f), d).replace(os.sep, "/"))
    return sorted(out, key=lambda s: s.encode())


def prepare_sets(build, workdir, count):
    """Makes (once) and returns {"600x450": dir, "1024x1024": dir}."""
    demo = os.path.join(workdir, "demo600")
    img600 = os.path.join(demo, "images")
    if len(list_images(img600)) != count if os.path.isdir(img600) else True:
        shutil.rmtree(demo, ignore_errors=True)
        subprocess.run([os.path.join(build, "tools", "make_demo_data"), "--out", demo, "--count",
                        str(count), "--seed", "1"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    img1024 = os.path.join(workdir, "set1024", "images")
    rels = list_images(img600)
    if not os.path.isdir(img1024) or len(list_images(img1024)) != len(rels):
        shutil.rmtree(os.path.dirname(img1024), ignore_errors=True)
        for i, rel in enumerate(rels):
            src = Image.open(os.path.join(img600, rel)).convert("RGB")
            big = src.resize((1366, 1024), Image.BICUBIC).crop((171, 0, 171 + 1024, 1024))
            a = np.asarray(big, dtype=np.float32)
            a = a + np.random.default_rng(1000 + i).normal(0.0, 2.5, a.shape).astype(np.float32)
            dst = os.path.join(img1024, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).save(
                dst, "JPEG", quality=90)
    return {"600x450": img600, "1024x1024": img1024}


# --------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------
def remove_cache(out):
    for p in (out, out + ".lock"):
        if os.path.exists(p):
            os.remove(p)
    shutil.rmtree(out + ".journal", ignore_errors=True)


def run_ours(build, weights, images, out, flags=(), expect=None):
    """Runs extract on a fresh cache; returns wall seconds. Fails loudly on a non-zero exit."""
    remove_cache(out)
    cmd = [os.path.join(build, "tools", "extract"), "--images", images, "--weights", weights,
           "--out", out, "--quiet"] + list(flags)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit("extract failed (exit %d): %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout, r.stderr))
    if expect is not None:
        with h5py.File(out, "r") as f:
            n = int(f.attrs["n_images"])
        if n != expect:
            sys.exit("extract wrote %d images, expected %d: %s" % (n, expect, " ".join(cmd)))
    return dt


def read_features(path):
    with h5py.File(path, "r") as f:
        return list(f["paths"].asstr()[:]), np.asarray(f["features"][:], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------
def pil_bilinear_tensor(path):
    im = Image.open(path).convert("RGB").resize((299, 299), Image.BILINEAR)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class TorchModel:
    """KerasInceptionV3 (bottleneck) in channels_last; mode 'auto' picks eager or frozen trace."""

    def __init__(self, weights, mode="auto", batch=32):
        t0 = time.perf_counter()
        w = ti.load_keras_h5(weights)
        m = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval()
        self.eager = m.to(memory_format=torch.channels_last)
        self.mode = mode
        self.fn = self.eager
        if mode in ("auto", "jit"):
            x = (torch.rand(batch, 3, 299, 299) * 2 - 1).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                frozen = torch.jit.freeze(torch.jit.trace(self.eager, x))
            if mode == "jit":
                self.fn = frozen
            else:
                t = {}
                with torch.no_grad():
                    for name, fn in (("eager_channels_last", self.eager), ("jit_frozen", frozen)):
                        fn(x)  # warm-up (the frozen graph optimises on its first runs)
                        fn(x)
                        t0b = time.perf_counter()
                        fn(x)
                        t[name] = time.perf_counter() - t0b
                self.mode = min(t, key=t.get)
                self.fn = frozen if self.mode == "jit_frozen" else self.eager
                self.pick_times = t
        elif mode == "eager_cl":
            self.mode = "eager_channels_last"
            with torch.no_grad():  # warm-up: oneDNN primitives for the batch shape
                self.eager((torch.rand(batch, 3, 299, 299) * 2 - 1).contiguous(
                    memory_format=torch.channels_last))
        self.setup_s = time.perf_counter() - t0

    def features(self, x):
        with torch.no_grad():
            return self.fn(x.contiguous(memory_format=torch.channels_last))


def run_torch(model, images, batch):
    """The PIL pipeline over every file of `images`; returns (seconds, paths, features float64)."""
    t0 = time.perf_counter()
    rels = list_images(images)
    feats = []
    for s in range(0, len(rels), batch):
        x = torch.stack([pil_bilinear_tensor(os.path.join(images, r)) for r in rels[s:s + batch]])
        feats.append(model.features(x))
    dt = time.perf_counter() - t0
    return dt, rels, torch.cat(feats).double().numpy()


def compare(a, b):
    """Per image: relative L2 ||a-b||/||b|| and cosine similarity."""
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return rel, cos


def fmt_range(v):
    return "%.2f..%.2f" % (min(v), max(v))


def common_args(doc):
    """The command line shared with preprocess_study.py (same image sets, weights and rounds)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--weights", default=None, help="default BUILD/reference/inception_v3_1based.h5")
    ap.add_argument("--workdir", default=None, help="default BUILD/bench_extract")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    return ap


def common_setup(a):
    """common_args' defaults resolved against --build (the work dir made) and torch's threads
    set; returns (weights, workdir)."""
    weights = a.weights or os.path.join(a.build, "reference", "inception_v3_1based.h5")
    workdir = a.workdir or os.path.join(a.build, "bench_extract")
    os.makedirs(workdir, exist_ok=True)
    torch.set_num_threads(a.threads)
    return weights, workdir


def main():
    ap = common_args(__doc__)
    ap.add_argument("--torch-mode", default="eager_cl", choices=["auto", "eager_cl", "jit"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    weights, workdir = common_setup(a)

    t0 = time.perf_counter()
    sets = prepare_sets(a.build, workdir, a.count)
    print("sets ready in %.1f s: %s" % (time.perf_counter() - t0, ", ".join(
        "%s %d files %.0f KiB/file" % (k, len(list_images(d)), sum(
            os.path.getsize(os.path.join(d, r)) for r in list_images(d)) / 1024 / len(list_images(d)))
        for k, d in sets.items())), flush=True)
    model = TorchModel(weights, a.torch_mode, a.batch)
    print("torch %s, %d threads, mode %s (set-up %.1f s%s)" % (
        torch.__version__, a.threads, model.mode, model.setup_s,
        (", pick: " + ", ".join("%s %.2f s/batch" % kv for kv in model.pick_times.items()))
        if hasattr(model, "pick_times") else ""), flush=True)

    one = os.path.join(workdir, "one_image")
    if not os.path.isdir(one):
        os.makedirs(os.path.join(one, "a"))
        r0 = list_images(sets["600x450"])[0]
        shutil.copy(os.path.join(sets["600x450"], r0), os.path.join(one, "a", "x.jpg"))
    cache = os.path.join(workdir, "e2e_cache.h5")

    runs = {}  # (set, name) -> [img/s per round]
    load = []
    sanity = {}
    startup = []

    def add(key, n, sec):
        runs.setdefault(key, []).append(n / sec)

    for rnd in range(a.rounds):
        startup.append(run_ours(a.build, weights, one, cache, expect=1))
        for set_name, d in sets.items():
            n = len(list_images(d))
            order = ["ours", "torch"] if rnd % 2 == 0 else ["torch", "ours"]
            if set_name == "1024x1024":
                order.insert(1, "ours_nodct")
            for what in order:
                load.append(os.getloadavg()[0])
                if what == "ours":
                    add((set_name, "ours (antialias, DCT on)"), n,
                        run_ours(a.build, weights, d, cache, ["--dct-scale", "true"], expect=n))
                    if rnd == 0:
                        ours_paths, ours_f = read_features(cache)
                elif what == "ours_nodct":
                    add((set_name, "ours --dct-scale false"), n,
                        run_ours(a.build, weights, d, cache, ["--dct-scale", "false"], expect=n))
                else:
                    sec, rels, tf = run_torch(model, d, a.batch)
                    add((set_name, "torch PIL+" + model.mode), n, sec)
                    if rnd == 0:
                        torch_paths, torch_f = rels, tf
                key = [k for k in runs if k[0] == set_name and k[1].startswith(
                    {"ours": "ours (", "ours_nodct": "ours --", "torch": "torch"}[what])][0]
                print("round %d %-9s %-30s %6.2f img/s  (load avg %.2f)" % (
                    rnd + 1, set_name, key[1], runs[key][-1], load[-1]), flush=True)
            if rnd == 0:
                if ours_paths != torch_paths:
                    sys.exit("path lists differ between the cache and the PIL pipeline")
                rel, cos = compare(ours_f, torch_f)
                sanity[set_name] = dict(rel_l2_mean=float(rel.mean()), rel_l2_max=float(rel.max()),
                                        cos_min=float(cos.min()))
    remove_cache(cache)

    print("\nextract end to end, %d images per set, %d rounds (median img/s, min..max); "
          "ours = whole process, torch = pipeline loop only" % (a.count, a.rounds))
    print("| set | run | img/s (median) | min..max | ours/torch |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for set_name in sets:
        tkey = [k for k in runs if k[0] == set_name and k[1].startswith("torch")][0]
        tmed = statistics.median(runs[tkey])
        for key in [k for k in runs if k[0] == set_name]:
            v = runs[key]
            med = statistics.median(v)
            ratio = "" if key == tkey else "%.2fx (per round %s)" % (med / tmed, ", ".join(
                "%.2f" % (x / y) for x, y in zip(v, runs[tkey])))
            print("| %s | %s | %.2f | %s | %s |" % (set_name, key[1], med, fmt_range(v), ratio))
            rows.append(dict(set=set_name, run=key[1], img_per_s=v, median=med,
                             ratio_vs_torch=(med / tmed) if key != tkey else None))
    print("ours on one image (fixed start-up: weights, model, cache): %s s" %
          ", ".join("%.2f" % s for s in startup))
    print("torch set-up (not in its numbers): %.1f s" % model.setup_s)
    for k, s in sanity.items():
        print("sanity %s: ours vs torch PIL pipeline bottleneck: rel. L2 mean %.4f max %.4f, "
              "cosine min %.6f" % (k, s["rel_l2_mean"], s["rel_l2_max"], s["cos_min"]))
    print("load average during the runs: %.2f..%.2f (2-core VM; others' jobs share it)" %
          (min(load), max(load)))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(count=a.count, rounds=a.rounds, threads=a.threads, batch=a.batch,
                           torch_mode=model.mode, torch_setup_s=model.setup_s,
                           ours_one_image_s=startup, rows=rows, sanity=sanity,
                           load_avg=load, torch_version=torch.__version__), fh, indent=1)


if __name__ == "__main__":
    main()
