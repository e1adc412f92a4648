"""CPU throughput baseline: PyTorch running the same Keras-semantics Inception v3 as the C++ engine.

Loads a Keras-layout weight file with tests/reference/torch_inception.py (BN folded into conv
weight+bias, so the net is plain conv+bias+ReLU), then times inference (no_grad, eval) for each batch
size in three modes: `nchw` (default layout), `channels_last`, and `jit_frozen`
(torch.jit.freeze(torch.jit.trace(...)), traced in whichever eager layout was faster). After warm-up
it prints one line per (mode, batch):
  torch <mode> batch=<b> img/s=<x> ms/batch=<y> GFLOP/s=<z>
with GFLOP counted exactly as sum(2*kh*kw*cin*cout*ho*wo) over the 94 convs (printed once; the head
and pools are not counted). The number is the median over --iters timed runs.
Run: /usr/bin/python3 bench/torch_inception_cpu.py --weights DIR/inception_v3_1based.h5 \
       --threads 2 --batches 1,8 [--iters N] [--json OUT]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import torch_inception as ti  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import median_seconds  # noqa: E402


def time_model(fn, x, iters, warmup):
    with torch.no_grad():
        return median_seconds(fn, x, iters, warmup)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batches.split(",") if b]
    flops = ti.conv_flops()
    gflop = flops / 1e9
    print("conv FLOP per 299x299 image: %d (%.4f GFLOP); torch %s, %d threads"
          % (flops, gflop, torch.__version__, a.threads))
    w = ti.load_keras_h5(a.weights)
    model = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval()
    model_cl = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval()
    model_cl = model_cl.to(memory_format=torch.channels_last)
    results = []

    def report(mode, b, sec, note=""):
        r = dict(mode=mode, batch=b, img_per_s=b / sec, ms_per_batch=sec * 1e3,
                 gflop_per_s=gflop * b / sec, threads=a.threads, note=note)
        results.append(r)
        print("torch %s batch=%d img/s=%.2f ms/batch=%.1f GFLOP/s=%.1f%s"
              % (mode, b, r["img_per_s"], r["ms_per_batch"], r["gflop_per_s"],
                 ("  (%s)" % note) if note else ""), flush=True)

    for b in batches:
        x = torch.rand(b, 3, 299, 299) * 2 - 1
        xcl = x.contiguous(memory_format=torch.channels_last)
        t_nchw = time_model(model, x, a.iters, a.warmup)
        report("nchw", b, t_nchw)
        t_cl = time_model(model_cl, xcl, a.iters, a.warmup)
        report("channels_last", b, t_cl)
        use_cl = t_cl < t_nchw
        base, xin = (model_cl, xcl) if use_cl else (model, x)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(base, xin))
        t_jit = time_model(frozen, xin, a.iters, a.warmup + 1)
        report("jit_frozen", b, t_jit, "traced " + ("channels_last" if use_cl else "nchw"))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(conv_flop_per_image=flops, torch_version=torch.__version__,
                           threads=a.threads, iters=a.iters, results=results), fh, indent=1)


if __name__ == "__main__":
    main()
