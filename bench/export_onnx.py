"""bench/export_onnx.py: the Inception v3 the peers (OpenVINO, ONNX Runtime) run, as an ONNX file
exported from the same Keras-layout weight file our engine and PyTorch use.

The model is tests/reference/torch_inception.py's KerasInceptionV3 (BN folded into conv weight +
bias in float64, rounded once to float32; TF 'same' padding; average pools that exclude padding,
exported as AveragePool count_include_pad=0), without the top: input `input` (N, 3, 299, 299)
float32 NCHW in [-1, 1] (the layout both peers prefer), output `bottleneck` (N, 2048); the batch
axis is dynamic (the peers reshape to a static batch before compiling). Debian's PyTorch 1.13
writes the file itself (no `onnx` package needed), opset 13.
The file is cached: when --out exists and is newer than the weights and this script, nothing is
done (delete it, or pass --force, to export again).
Run with /usr/bin/python3 (Debian python3-torch):
    /usr/bin/python3 bench/export_onnx.py --weights build/reference/inception_v3_1based.h5 \
        --out build/peers/inception_v3_nchw.onnx
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import torch_inception as ti  # noqa: E402


def up_to_date(out, weights):
    if not os.path.exists(out):
        return False
    t = os.path.getmtime(out)
    return t >= os.path.getmtime(weights) and t >= os.path.getmtime(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if not a.force and up_to_date(a.out, a.weights):
        print("onnx: %s is up to date" % a.out)
        return
    w = ti.load_keras_h5(a.weights)
    model = ti.KerasInceptionV3(w, include_top=False, dtype=torch.float32).eval()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, 299, 299), tmp, input_names=["input"],
                          output_names=["bottleneck"], opset_version=13, do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "bottleneck": {0: "batch"}})
    os.replace(tmp, a.out)  # a killed export never leaves a truncated file that looks cached
    print("onnx: wrote %s (%.1f MiB) from %s" % (a.out, os.path.getsize(a.out) / 1048576.0, a.weights))


if __name__ == "__main__":
    main()
