"""bench/peers_cpu.py: the peer runtimes' CPU throughput on the same Inception v3 as our engine:
OpenVINO with its default settings (on an AVX512_BF16/AMX CPU its default inference precision
is bf16), OpenVINO with INFERENCE_PRECISION_HINT=f32, and ONNX Runtime (CPU execution provider,
default graph optimizations), each with --threads intra-op threads, at each batch size.

The model is bench/export_onnx.py's file (NCHW, from the same Keras weight file). Each mode first
runs the reference images (reference.h5 /inputs, NHWC, transposed here) and compares its
bottleneck with PyTorch's float64 one (/blocks/bottleneck): per image cosine and relative L2
(the worst image's are reported); a mode under its floor (f32 modes: rel L2 <= 1e-3; OpenVINO
default: cosine >= --min-cosine-default, 0.99 like our bf16) is reported as failed and not
timed (exit status 1). Each mode is compiled once per batch size with a static shape, warmed up, then timed --iters times; the number
is the median. Prints one line per (mode, batch), and with --json writes
  {"versions": {...}, "threads": T, "openvino_default": {<what OpenVINO reports>},
   "results": [{"mode", "batch", "img_per_s", "ms_per_batch", "gflop_per_s", "cosine", "rel_l2",
                "note"}], "failed": {mode: why}}
(GFLOP/s only with --conv-flop, the conv count per image: bench/compare_cpu.py passes ours).
Run with the benchmark venv's Python (bench/peers_venv.sh makes it):
    build/peers-venv/bin/python bench/peers_cpu.py --onnx build/peers/inception_v3_nchw.onnx \
        --reference build/reference/reference.h5 --threads 2 --batches 1,8 [--modes ov_default,ov_f32,ort]
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import median_seconds  # noqa: E402

MODES = ("ov_default", "ov_f32", "ort")


def fidelity(got, want):
    """Worst image's cosine and relative L2 of got vs want (both N x 2048), in float64."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    cos = (g * w).sum(1) / np.sqrt((g * g).sum(1) * (w * w).sum(1))
    rel = np.sqrt(((g - w) ** 2).sum(1) / (w * w).sum(1))
    return float(np.nan_to_num(cos, nan=-1.0).min()), float(np.nan_to_num(rel, nan=np.inf).max())


class OpenVino:
    """One compiled model per batch size; `f32` forces INFERENCE_PRECISION_HINT=f32."""

    def __init__(self, onnx_path, threads, f32):
        import openvino as ov
        self.ov = ov
        self.core = ov.Core()
        self.model_path = onnx_path
        self.config = {"INFERENCE_NUM_THREADS": threads}
        if f32:
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = {}

    def compiled_for(self, batch):
        if batch not in self.compiled:
            m = self.core.read_model(self.model_path)
            m.reshape({m.inputs[0].get_any_name(): [batch, 3, 299, 299]})
            self.compiled[batch] = self.core.compile_model(m, "CPU", self.config)
        return self.compiled[batch]

    def properties(self, batch):
        c = self.compiled_for(batch)
        out = {}
        for k in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                  "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING"):
            try:
                out[k] = str(c.get_property(k))
            except Exception as e:  # a property this version does not have
                out[k] = "n/a (%s)" % type(e).__name__
        return out

    def run(self, x):
        c = self.compiled_for(x.shape[0])
        req = getattr(self, "_req_%d" % x.shape[0], None)
        if req is None:
            req = c.create_infer_request()
            setattr(self, "_req_%d" % x.shape[0], req)
        req.infer({0: x})
        return req.get_output_tensor(0).data


class OnnxRuntime:
    def __init__(self, onnx_path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def run(self, x):
        return self.sess.run(None, {self.name: x})[0]


def time_runs(fn, x, iters, warmup):
    return median_seconds(fn, x, iters, warmup)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--conv-flop", type=float, default=0.0, help="conv FLOP per image, for GFLOP/s")
    ap.add_argument("--min-cosine-default", type=float, default=0.99,
                    help="OpenVINO default (bf16) floor; bench/compare_cpu.py passes our bf16 floor")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit("peers_cpu.py: unknown mode(s) %s (known: %s)" % (",".join(bad), ",".join(MODES)))
    batches = [int(b) for b in a.batches.split(",") if b]
    with h5py.File(a.reference, "r") as f:
        ref_x = np.ascontiguousarray(np.asarray(f["inputs"], np.float32).transpose(0, 3, 1, 2))
        ref_b = np.asarray(f["blocks/bottleneck"], np.float64)

    import onnxruntime
    import openvino
    versions = {"openvino": openvino.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__}
    print("peers: openvino %s, onnxruntime %s, %d threads" % (versions["openvino"], versions["onnxruntime"],
                                                              a.threads), flush=True)
    results, failed, ov_default_props = [], {}, {}
    rng = np.random.default_rng(0)
    for mode in modes:
        if mode == "ort":
            rt = OnnxRuntime(a.onnx, a.threads)
        else:
            rt = OpenVino(a.onnx, a.threads, f32=(mode == "ov_f32"))
        cos, rel = fidelity(rt.run(ref_x), ref_b)
        ok = cos >= a.min_cosine_default if mode == "ov_default" else rel <= 1e-3
        note = ""
        if mode != "ort":
            props = rt.properties(batches[0])
            note = "precision %s" % props["INFERENCE_PRECISION_HINT"]
            if mode == "ov_default":
                ov_default_props = props
            print("%s: OpenVINO reports %s" % (mode, " ".join("%s=%s" % kv for kv in props.items())), flush=True)
        print("%s: bottleneck vs PyTorch on %d reference images: cosine (worst) %.6f, rel L2 (worst) %.3g%s"
              % (mode, ref_x.shape[0], cos, rel, "" if ok else ": FAILED, not timed"), flush=True)
        if not ok:
            failed[mode] = "cosine %.6f, rel L2 %.3g under the floor" % (cos, rel)
            continue
        for b in batches:
            x = (rng.random((b, 3, 299, 299), dtype=np.float32) * 2 - 1).astype(np.float32)
            sec = time_runs(rt.run, x, a.iters, a.warmup)
            r = dict(mode=mode, batch=b, img_per_s=b / sec, ms_per_batch=sec * 1e3,
                     gflop_per_s=a.conv_flop * b / sec / 1e9, threads=a.threads, cosine=cos, rel_l2=rel,
                     note=note)
            results.append(r)
            print("peer %s batch=%d img/s=%.2f ms/batch=%.1f%s" % (
                mode, b, r["img_per_s"], r["ms_per_batch"],
                (" GFLOP/s=%.1f" % r["gflop_per_s"]) if a.conv_flop else ""), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(versions=versions, threads=a.threads, iters=a.iters, openvino_default=ov_default_props,
                           results=results, failed=failed), fh, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
