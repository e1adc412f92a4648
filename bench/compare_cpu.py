#!/usr/bin/env python3
"""bench/compare_cpu.py: our Inception v3 CPU forward vs PyTorch on the same weights, same
machine, same thread count, in one run. The 2-core dev VM's throughput swings by up to +-30%
from minute to minute (neighbours on the host), so the two are interleaved for --rounds rounds
and the medians are compared; the spread is printed too.
    /usr/bin/python3 bench/compare_cpu.py --build build --rounds 3 [--threads 2]
Prints one table and the two ratios README.md's speed table quotes: ours at batch 8 vs PyTorch's
best mode at batch 8, ours at batch 1 vs PyTorch's default (NCHW) at batch 1."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_ours(build, ref_dir, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ENGINE_REFERENCE_DIR=ref_dir)
    out = subprocess.run([os.path.join(build, "bench", "bench_inception"), "--benchmark_format=json",
                          "--benchmark_min_time=3"], env=env, check=True, capture_output=True, text=True)
    res = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        batch = int(b["name"].split("/")[1])
        res[batch] = b["img/s"]
        res["act_MiB_%d" % batch] = b["act_MiB"]
        res["peak_rss_MiB_%d" % batch] = b["peak_rss_MiB"]
    return res


def run_torch(weights, threads):
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.NamedTemporaryFile(suffix=".json") as tf:
        subprocess.run([sys.executable, os.path.join(here, "torch_inception_cpu.py"), "--weights", weights,
                        "--threads", str(threads), "--batches", "1,8", "--iters", "5", "--json", tf.name],
                       check=True, capture_output=True, text=True)
        with open(tf.name) as fh:
            data = json.load(fh)
    return {(r["mode"], r["batch"]): r["img_per_s"] for r in data["results"]}, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    ref = os.path.join(a.build, "reference")
    weights = os.path.join(ref, "inception_v3_1based.h5")
    ours, torch_runs, meta = [], [], None
    for r in range(a.rounds):
        ours.append(run_ours(a.build, ref, a.threads))
        t, meta = run_torch(weights, a.threads)
        torch_runs.append(t)
        print("round %d: ours b1 %.2f b8 %.2f | torch %s" % (
            r + 1, ours[-1][1], ours[-1][8],
            " ".join("%s/b%d %.2f" % (m, b, v) for (m, b), v in sorted(t.items()))), flush=True)
    gflop = meta["conv_flop_per_image"] / 1e9

    def med(xs):
        return statistics.median(xs)

    rows = [("ours (engine)", b, [o[b] for o in ours]) for b in (1, 8)]
    for mode in ("nchw", "channels_last", "jit_frozen"):
        for b in (1, 8):
            rows.append(("torch " + mode, b, [t[(mode, b)] for t in torch_runs]))
    print("\n| run | batch | img/s (median) | min..max | GFLOP/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, b, xs in rows:
        print("| %s | %d | %.2f | %.2f..%.2f | %.0f |" % (name, b, med(xs), min(xs), max(xs), med(xs) * gflop))
    best8 = max(med([t[(m, 8)] for t in torch_runs]) for m in ("nchw", "channels_last", "jit_frozen"))
    best1 = max(med([t[(m, 1)] for t in torch_runs]) for m in ("nchw", "channels_last", "jit_frozen"))
    o1, o8 = med([o[1] for o in ours]), med([o[8] for o in ours])
    print("\nratio batch 8, ours / PyTorch best mode: %.2fx" % (o8 / best8))
    print("ratio batch 1, ours / PyTorch default (nchw): %.2fx" % (o1 / med([t[("nchw", 1)] for t in torch_runs])))
    print("ratio batch 1, ours / PyTorch best mode: %.2fx" % (o1 / best1))
    print("activation memory reserved at batch 8: %.1f MiB; peak RSS %.0f MiB" % (
        ours[-1]["act_MiB_8"], ours[-1]["peak_rss_MiB_8"]))


if __name__ == "__main__":
    main()
