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

--vs-network (issue 12: extract keeps >= 90% of the network's own img/s in each precision): per
round and per precision (fp32, bf16, int8; the order rotates every round), interleaved:
  network  build/bench/bench_inception, the BM_InceptionV3Cpu/<p>/<e2e batch> row only
           (ENGINE_BENCH_PRECISIONS=<p>, --benchmark_min_time=--net-min-time), OMP_NUM_THREADS=--threads;
  e2e      extract --precision <p> --batch <e2e batch> --quiet on a fresh cache of the 600x450 set
           (make_demo_data --seed 1, max(--sizes) images; each smaller size is a hard-linked prefix of
           the same sorted listing), OMP_NUM_THREADS=--threads, --workers default (= cores).
The e2e batch is --e2e-batch (default 8, the network row it is compared with: bench_inception has
rows at batch 1 and 8 only, and with batch-invariant CPU threading each image runs on one thread
either way, so 8 vs extract's default 32 changes only the end-of-batch join).
Reported per precision (median over rounds): the network's img/s; extract's plain rate N / wall at
each size; the MARGINAL rate (N2 - N1) / (T2 - T1) between the two sizes of the same round, which
cancels the fixed start-up (weight load, primitive creation, int8 calibration, final HDF5 write)
and the start-up seconds it implies, T1 - N1 / marginal; the ratios to the network and whether
>= 0.90; and where a marginal image's time goes: CPU core-seconds per image (user + sys of the
extract process, marginal between sizes) and the cores it kept busy, beside the network alone's
(bench_inception's main-thread cpu_time x threads), the difference being the decode side's work,
and their quotient, the ratio at equal core use (immune to load drifting between the runs).
--decode-bench also runs build/bench/bench_decode's one-thread 600x450 preprocess row once
(decode + resize, s/img) and prints the ratio that a zero-sum share of the cores predicts:
network CPU/img / (network CPU/img + decode s/img).
Run: /usr/bin/python3 bench/extract_e2e.py --vs-network [--sizes 192,576] [--rounds 2]
     [--precisions fp32,bf16,int8] [--e2e-batch 8] [--net-min-time 5] [--decode-bench] [--json OUT]
"""
import argparse
import json
import os
import resource
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


# --------------------------------------------------------------------------------------------
# --vs-network: extract end to end against the network alone, per precision
# --------------------------------------------------------------------------------------------
def prepare_sizes(build, workdir, sizes):
    """The 600x450 set at max(sizes) images (make_demo_data --seed 1, made once) and, per smaller
    size, a hard-linked prefix of its sorted listing; returns {n: images dir}."""
    top = max(sizes)
    demo = os.path.join(workdir, "demo600_%d" % top)
    full = os.path.join(demo, "images")
    if not os.path.isdir(full) or len(list_images(full)) != top:
        shutil.rmtree(demo, ignore_errors=True)
        subprocess.run([os.path.join(build, "tools", "make_demo_data"), "--out", demo, "--count",
                        str(top), "--seed", "1"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    rels = list_images(full)
    out = {}
    for n in sizes:
        if n == top:
            out[n] = full
            continue
        d = os.path.join(workdir, "demo600_%d_first%d" % (top, n))
        if not os.path.isdir(d) or list_images(d) != rels[:n]:
            shutil.rmtree(d, ignore_errors=True)
            for r in rels[:n]:
                os.makedirs(os.path.dirname(os.path.join(d, r)), exist_ok=True)
                os.link(os.path.join(full, r), os.path.join(d, r))
        out[n] = d
    return out


def cpu_seconds_of(fn):
    """Runs fn() (which waits for its child process); returns (fn's result, wall s, user + sys
    CPU s of the children it waited for)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return res, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def run_extract_precision(build, weights, images, out, precision, batch, threads, expect):
    """extract --precision P --batch B on a fresh cache with OMP_NUM_THREADS=threads; checks the
    cache holds `expect` images at precision P (a silent fp32 fallback would void the row);
    returns (wall s, CPU s)."""
    remove_cache(out)
    cmd = [os.path.join(build, "tools", "extract"), "--images", images, "--weights", weights,
           "--out", out, "--quiet", "--precision", precision, "--batch", str(batch)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r, wall, cpu = cpu_seconds_of(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True))
    if r.returncode != 0:
        sys.exit("extract failed (exit %d): %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout, r.stderr))
    with h5py.File(out, "r") as f:
        n, got = int(f.attrs["n_images"]), f.attrs.get("precision", "fp32")
    got = got.decode() if isinstance(got, bytes) else str(got)
    if n != expect or got != precision:
        sys.exit("extract wrote %d images at %s, expected %d at %s: %s" % (n, got, expect, precision, " ".join(cmd)))
    return wall, cpu


def run_network(build, ref_dir, precision, batch, min_time, threads):
    """bench_inception's BM_InceptionV3Cpu/<precision>/<batch> row (validated first): (img/s, CPU
    s per image). Google Benchmark's cpu_time is the main thread's only; every OpenMP thread runs
    the same share of one-image chunks (static round-robin), so all threads' CPU ~ that x threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ENGINE_REFERENCE_DIR=ref_dir,
               ENGINE_BENCH_PRECISIONS=precision)
    cmd = [os.path.join(build, "bench", "bench_inception"), "--benchmark_format=json",
           "--benchmark_filter=^BM_InceptionV3Cpu/%s/%d/" % (precision, batch),
           "--benchmark_min_time=%g" % min_time]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    try:
        rows = [b for b in json.loads(p.stdout)["benchmarks"] if not b.get("error_occurred")]
    except ValueError:
        rows = []
    if p.returncode != 0 or len(rows) != 1:
        sys.exit("bench_inception (%s) exited %d with %d rows:\n%s" % (" ".join(cmd), p.returncode, len(rows), p.stderr[-3000:]))
    b = rows[0]
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
    return b["img/s"], b["cpu_time"] * scale * threads / batch


def run_decode_bench(build):
    """bench_decode's one-thread 600x450 full decode + antialias resize: seconds per image."""
    cmd = [os.path.join(build, "bench", "bench_decode"), "--benchmark_format=json",
           "--benchmark_filter=^BM_DecodeResize/600x450_full_antialias$", "--benchmark_min_time=2"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("bench_decode exited %d:\n%s" % (p.returncode, p.stderr[-3000:]))
    return 1.0 / json.loads(p.stdout)["benchmarks"][0]["img/s"]


def vs_network(a, weights, workdir):
    sizes = sorted(int(x) for x in a.sizes.split(","))
    precisions = [p for p in a.precisions.split(",") if p]
    if len(sizes) != 2 or sizes[0] <= 0 or sizes[0] == sizes[1]:
        sys.exit("--sizes: two different image counts, e.g. 192,576")
    ref_dir = a.ref_dir or os.path.join(a.build, "reference")
    t0 = time.perf_counter()
    sets = prepare_sizes(a.build, workdir, sizes)
    print("600x450 sets ready in %.1f s: %s" % (time.perf_counter() - t0, ", ".join(
        "%d files (%.0f KiB/file)" % (n, sum(os.path.getsize(os.path.join(d, r)) for r in list_images(d))
                                      / 1024 / n) for n, d in sets.items())), flush=True)
    decode_s = run_decode_bench(a.build) if a.decode_bench else None
    if decode_s:
        print("bench_decode 600x450 full decode + antialias resize, one thread: %.2f ms/img" % (decode_s * 1e3))
    cache = os.path.join(workdir, "e2e_vs_network.h5")
    runs = {p: [] for p in precisions}  # per precision, per round: dict of measurements
    load = []
    for rnd in range(a.rounds):
        k = rnd % len(precisions)
        for p in precisions[k:] + precisions[:k]:
            m = {}
            steps = ["net", sizes[0], sizes[1]]
            for what in (steps if rnd % 2 == 0 else steps[::-1]):
                load.append(os.getloadavg()[0])
                if what == "net":
                    m["net"], m["net_cpu_per_img"] = run_network(a.build, ref_dir, p, a.e2e_batch,
                                                                 a.net_min_time, a.threads)
                    print("round %d %-4s network batch %d: %.2f img/s, %.1f CPU ms/img (load %.2f)" % (
                        rnd + 1, p, a.e2e_batch, m["net"], m["net_cpu_per_img"] * 1e3, load[-1]), flush=True)
                else:
                    m[what] = run_extract_precision(a.build, weights, sets[what], cache, p, a.e2e_batch,
                                                    a.threads, what)
                    print("round %d %-4s extract %d images: %.2f s wall, %.2f s CPU, %.2f img/s (load %.2f)" % (
                        rnd + 1, p, what, m[what][0], m[what][1], what / m[what][0], load[-1]), flush=True)
            (t1, c1), (t2, c2) = m[sizes[0]], m[sizes[1]]
            dn = sizes[1] - sizes[0]
            m["marginal"] = dn / (t2 - t1) if t2 > t1 else float("inf")
            m["startup_s"] = t1 - sizes[0] / m["marginal"]
            m["cpu_per_img"] = (c2 - c1) / dn
            m["cores_busy"] = (c2 - c1) / (t2 - t1) if t2 > t1 else float("nan")
            m["plain"] = {n: n / m[n][0] for n in sizes}
            m["ratio_marginal"] = m["marginal"] / m["net"]
            m["ratio_plain"] = m["plain"][sizes[1]] / m["net"]
            runs[p].append(m)
    remove_cache(cache)

    med = statistics.median
    print("\nextract end to end vs the network alone: 600x450 q90 JPEGs, batch %d, %d threads "
          "(OMP_NUM_THREADS; decode workers = cores), %d rounds, medians (min..max)" % (
              a.e2e_batch, a.threads, a.rounds))
    print("| precision | network img/s | e2e plain %d | e2e plain %d | e2e marginal | start-up s | "
          "marginal/network | plain %d/network | >= 0.90 |" % (sizes[0], sizes[1], sizes[1]))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for p in precisions:
        ms = runs[p]
        col = lambda f: [f(m) for m in ms]  # noqa: E731
        cell = lambda v, fmt="%.2f": (fmt + " (" + fmt + ".." + fmt + ")") % (med(v), min(v), max(v))  # noqa: E731
        rm, rp = col(lambda m: m["ratio_marginal"]), col(lambda m: m["ratio_plain"])
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            p, cell(col(lambda m: m["net"])), cell(col(lambda m: m["plain"][sizes[0]])),
            cell(col(lambda m: m["plain"][sizes[1]])), cell(col(lambda m: m["marginal"])),
            cell(col(lambda m: m["startup_s"]), "%.1f"), cell(rm, "%.3f"), cell(rp, "%.3f"),
            "marginal %s, plain %s" % ("yes" if med(rm) >= 0.9 else "NO", "yes" if med(rp) >= 0.9 else "NO")))
        rows.append(dict(precision=p, rounds=ms))
    for p in precisions:
        print("per round, %s: marginal/network %s; plain %d/network %s; network CPU/extract CPU %s" % (
            p, ", ".join("%.3f" % m["ratio_marginal"] for m in runs[p]), sizes[1],
            ", ".join("%.3f" % m["ratio_plain"] for m in runs[p]),
            ", ".join("%.3f" % (m["net_cpu_per_img"] / m["cpu_per_img"]) for m in runs[p])))
    print("\nwhere a marginal image's time goes (medians): extract's CPU per image (user + sys, "
          "marginal between the sizes) and the cores it kept busy; the network alone's CPU per image "
          "and cores busy (bench_inception main-thread cpu_time x threads); the rest = the difference "
          "(SHA-256, decode, resize, queue hand-off, journal, the threads competing for the cores)")
    print("| precision | extract CPU ms/img | extract cores busy | network CPU ms/img | network cores busy "
          "| rest CPU ms/img | network CPU / extract CPU |%s" % (" ratio predicted from bench_decode |" if decode_s else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |%s" % (" --- |" if decode_s else ""))
    for p in precisions:
        ms = runs[p]
        cpu = med([m["cpu_per_img"] for m in ms])
        net = med([m["net"] for m in ms])
        net_cpu = med([m["net_cpu_per_img"] for m in ms])
        # Zero-sum share: each image adds decode_s of CPU to the network's net_cpu.
        extra = (" %.3f |" % (net_cpu / (net_cpu + decode_s))) if decode_s else ""
        print("| %s | %.1f | %.2f | %.1f | %.2f | %.1f | %.3f |%s" % (
            p, cpu * 1e3, med([m["cores_busy"] for m in ms]), net_cpu * 1e3, net_cpu * net,
            (cpu - net_cpu) * 1e3, net_cpu / cpu, extra))
    print("network CPU / extract CPU is the ratio that holds wherever both keep the cores equally busy "
          "(it is immune to the load drifting between runs, unlike the wall-clock ratios above); "
          "extract keeping fewer cores busy than the network would lower the wall-clock ratio below it")
    print("load average during the runs: %.2f..%.2f (2-core VM; others' jobs share it)" % (min(load), max(load)))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(mode="vs-network", sizes=sizes, rounds=a.rounds, threads=a.threads,
                           batch=a.e2e_batch, net_min_time=a.net_min_time, decode_s=decode_s,
                           results=rows, load_avg=load), fh, indent=1, default=str)


def main():
    ap = common_args(__doc__)
    ap.add_argument("--torch-mode", default="eager_cl", choices=["auto", "eager_cl", "jit"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--vs-network", action="store_true",
                    help="extract per precision against bench_inception's network alone (see the header)")
    ap.add_argument("--sizes", default="192,576", help="--vs-network: the two image counts")
    ap.add_argument("--precisions", default="fp32,bf16,int8", help="--vs-network")
    ap.add_argument("--e2e-batch", type=int, default=8, help="--vs-network: extract's and the network row's batch")
    ap.add_argument("--net-min-time", type=float, default=5.0, help="--vs-network: bench_inception's --benchmark_min_time")
    ap.add_argument("--decode-bench", action="store_true", help="--vs-network: also time bench_decode once")
    ap.add_argument("--ref-dir", default=None, help="--vs-network: default BUILD/reference")
    a = ap.parse_args()
    weights, workdir = common_setup(a)
    if a.vs_network:
        vs_network(a, weights, workdir)
        return

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
