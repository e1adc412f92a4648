"""GPU throughput baseline: PyTorch running the same Keras-semantics Inception v3 as the C++ engine.

Loads a Keras-layout weight file with tests/reference/torch_inception.py (BN folded into conv
weight+bias: a plain conv+bias+ReLU net, the same math as models/inception_v3_cuda.h) and times the
forward to the 2048 bottleneck (no_grad, eval) with CUDA events, --warmup runs then --iters timed:
  fp32                 batch B, NCHW, TF32 off (cudnn.allow_tf32 = matmul.allow_tf32 = False)
  tf32                 batch B, NCHW, TF32 on
  fp16_channels_last   batch B, half weights and input, channels_last
  fp16_compile         the same under torch.compile (default mode; compile time printed, not timed)
  fp32_b1_eager        batch 1, fp32, TF32 off
  fp32_b1_graph        batch 1, fp32, the forward captured in a CUDA graph and replayed
One line per mode: torch <mode> batch=<b> img/s=<x> ms/batch=<y> TFLOP/s=<z>; --json writes them.
Run on the GPU machine (bench/gpu/run_device.sh does):
  python3 bench/gpu/torch_inception_gpu.py --weights REF/inception_v3_1based.h5 --json out.json
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))
import torch_inception as ti  # noqa: E402


def time_cuda(fn, x, iters, warmup):
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn(x)
        b.record()
        torch.cuda.synchronize()
    return a.elapsed_time(b) / iters / 1e3  # seconds per call


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    w = ti.load_keras_h5(a.weights)
    if not torch.cuda.is_available():
        # The dry run (bench/gpu/dry_run.sh) ends here: weights read, nothing to time. Exit 77 is
        # run_device.sh's "skipped"; with ENGINE_REQUIRE_GPU=1 (the GPU machine) it is a failure.
        print("torch %s: no CUDA device: skipped (weights read: %d convs)" % (torch.__version__, len(w["conv"])))
        sys.exit(1 if os.environ.get("ENGINE_REQUIRE_GPU") == "1" else 77)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    gflop = ti.conv_flops() / 1e9
    print("torch %s, cudnn %s, %s; %.4f GFLOP per image" % (
        torch.__version__, torch.backends.cudnn.version(), torch.cuda.get_device_name(0), gflop), flush=True)
    results = []

    def report(mode, b, sec, note=""):
        r = dict(mode=mode, batch=b, img_per_s=b / sec, ms_per_batch=sec * 1e3,
                 tflop_per_s=gflop * b / sec / 1e3, note=note)
        results.append(r)
        print("torch %s batch=%d img/s=%.1f ms/batch=%.3f TFLOP/s=%.2f%s" % (
            mode, b, r["img_per_s"], r["ms_per_batch"], r["tflop_per_s"], ("  (%s)" % note) if note else ""),
            flush=True)
        if a.json:  # rewrite after every mode: a timeout later keeps what was measured
            with open(a.json, "w") as fh:
                json.dump(results, fh, indent=1)

    def set_tf32(on):
        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cuda.matmul.allow_tf32 = on

    B = a.batch
    model = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval().to(dev)
    x = (torch.rand(B, 3, 299, 299, device=dev) * 2 - 1)
    set_tf32(False)
    report("fp32", B, time_cuda(model, x, a.iters, a.warmup))
    set_tf32(True)
    report("tf32", B, time_cuda(model, x, a.iters, a.warmup))
    set_tf32(False)

    x1 = x[:1].clone()
    report("fp32_b1_eager", 1, time_cuda(model, x1, a.iters * 5, a.warmup))
    static_x = x1.clone()
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_y = model(static_x)  # noqa: F841
    report("fp32_b1_graph", 1, time_cuda(lambda _: g.replay(), x1, a.iters * 5, a.warmup))
    del g

    mh = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval().to(dev).half()
    mh = mh.to(memory_format=torch.channels_last)
    xh = x.half().contiguous(memory_format=torch.channels_last)
    report("fp16_channels_last", B, time_cuda(mh, xh, a.iters, a.warmup))
    if not a.skip_compile:
        t0 = time.time()
        mc = torch.compile(mh)
        with torch.no_grad():
            mc(xh)
        torch.cuda.synchronize()
        ct = time.time() - t0
        report("fp16_compile", B, time_cuda(mc, xh, a.iters, a.warmup), "compile %.0f s" % ct)


if __name__ == "__main__":
    main()
