"""Generates the reference data for the C++ Inception v3 engine's tests (see FORMAT.md next to it).

Writes into --out DIR: two Keras-layout weight files with the same seeded random weights
(inception_v3_1based.h5: Keras 2 style, root, 1-based names, with the `predictions` top;
inception_v3_0based_model_weights.h5: tf.keras style, 0-based names, no top, under /model_weights,
split layer_names0..2), reference.h5 (inputs, per-block NHWC activations, bottleneck, softmax, and
small single-op cases under /layers), and bad/ (malformed weight files + manifest.txt) for loader
error tests. Conv kernels are He-normal; the BN statistics are then calibrated in one float64
forward pass over the inputs so every layer's output has unit-ish scale. Reference activations are
computed in float64 (from the float32-stored weights and inputs) and stored as float32.
Run: /usr/bin/python3 tests/reference/make_reference.py --out DIR [--images 2] [--seed 0] [--force]
(about 20 s on 2 cores; a complete existing DIR with the same format_version is left alone).
"""
import argparse
import os
import shutil
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_inception as ti  # noqa: E402

FORMAT_VERSION = 1
FILE_1B = "inception_v3_1based.h5"
FILE_0B = "inception_v3_0based_model_weights.h5"
FILE_REF = "reference.h5"
BAD = [
    ("missing_layer.h5", "group conv2d_50 deleted and its name removed from layer_names"),
    ("wrong_shape.h5", "conv2d_10 kernel:0 has shape (3,3,64,97): cout+1, expected (3,3,64,96)"),
    ("wrong_dtype.h5", "batch_normalization_3 moving_mean:0 stored as float64"),
    ("nan_value.h5", "conv2d_7 kernel:0 has one NaN at [0,0,0,0]"),
    ("inf_value.h5", "batch_normalization_20 moving_variance:0 has one +Inf at [0]"),
    ("negative_variance.h5", "batch_normalization_5 moving_variance:0 has one negative value (-0.5) at [1]"),
    ("truncated.h5", "first 60% of the bytes of inception_v3_1based.h5"),
    ("not_hdf5.h5", "a text file, not HDF5"),
    ("empty.h5", "zero bytes"),
    ("no_layer_names.h5", "valid HDF5 with one group conv2d_1 and no layer_names attribute"),
    ("missing_weight_dataset.h5", "batch_normalization_30 weight_names lists beta:0 but that dataset is deleted"),
    ("wrong_rank.h5", "conv2d_2 kernel:0 stored with rank 2, shape (288,32), expected (3,3,32,32)"),
]


def tmp_of(path):
    return "%s.tmp-%d" % (path, os.getpid())


# ----------------------------------------------------------------------------------------------
# Keras layer graph (names, depth-sorted order)
# ----------------------------------------------------------------------------------------------
class _LayerOps:
    """Builds the Keras layer list: (name, inbound names) in creation order."""

    def __init__(self, zero_based):
        self.zb = zero_based
        self.nodes = []
        self.count = {}

    def nm(self, base, k):  # k is the 1-based creation number
        if self.zb:
            return base if k == 1 else "%s_%d" % (base, k - 1)
        return "%s_%d" % (base, k)

    def add(self, name, inputs):
        self.nodes.append((name, list(inputs)))
        return name

    def auto(self, base, inputs):
        self.count[base] = self.count.get(base, 0) + 1
        return self.add(self.nm(base, self.count[base]), inputs)

    def conv(self, x, idx, *a):
        c = self.add(self.nm("conv2d", idx), [x])
        b = self.add(self.nm("batch_normalization", idx), [c])
        return self.add(self.nm("activation", idx), [b])

    def maxpool(self, x):
        return self.auto("max_pooling2d", [x])

    def avgpool(self, x):
        return self.auto("average_pooling2d", [x])

    def concat(self, xs, name):
        return self.add(name, xs) if name else self.auto("concatenate", xs)

    def tap(self, name, x):
        return x


def keras_layer_order(zero_based, include_top):
    ops = _LayerOps(zero_based)
    x = ops.add("input_1", [])
    x = ti.topology(ops, x)
    x = ops.add("avg_pool", [x])
    if include_top:
        ops.add("predictions", [x])
    # Keras sorts model.layers by depth (longest path to the output, deepest first); ties here
    # broken by creation order (an approximation of Keras' exact tie order).
    order = {n: i for i, (n, _) in enumerate(ops.nodes)}
    depth = {n: 0 for n, _ in ops.nodes}
    for n, ins in reversed(ops.nodes):
        for p in ins:
            depth[p] = max(depth[p], depth[n] + 1)
    names = sorted(order, key=lambda n: (-depth[n], order[n]))
    assert len(set(names)) == len(names)
    return names


def write_keras_h5(path, W, zero_based, include_top, under_model_weights, split_names,
                   empty_weight_names):
    names = keras_layer_order(zero_based, include_top)
    tmp = tmp_of(path)
    with h5py.File(tmp, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0" if zero_based else b"2.1.5"
        # Marks the file as seeded random weights: the engine's tools warn loudly on it.
        f.attrs["engine_random_weights"] = b"seeded random weights for tests and the demo, not ImageNet"
        g = f.create_group("model_weights") if under_model_weights else f
        if under_model_weights:
            g.attrs["backend"] = b"tensorflow"
            g.attrs["keras_version"] = b"2.4.0"
        arr = np.array([n.encode() for n in names])  # fixed-length 'S' like Keras
        if split_names:
            for k, chunk in enumerate(np.array_split(arr, split_names)):
                g.attrs["layer_names%d" % k] = chunk
        else:
            g.attrs["layer_names"] = arr
        pred_suffix = "predictions_1"  # nested name differing from the layer name on purpose
        for lname in names:
            lg = g.create_group(lname)
            if lname.startswith("conv2d"):
                idx = _idx_of(lname, zero_based)
                wn = {"kernel:0": W["conv"][idx]}
            elif lname.startswith("batch_normalization"):
                idx = _idx_of(lname, zero_based)
                beta, mean, var = W["bn"][idx]
                wn = {"beta:0": beta, "moving_mean:0": mean, "moving_variance:0": var}
            elif lname == "predictions":
                wn = {"kernel:0": W["dense"][0], "bias:0": W["dense"][1]}
            else:
                wn = {}
            prefix = pred_suffix if lname == "predictions" else lname
            full = ["%s/%s" % (prefix, k) for k in wn]
            lg.attrs["weight_names"] = (np.array([s.encode() for s in full]) if full
                                        else empty_weight_names)
            for fn, v in zip(full, wn.values()):
                lg.create_dataset(fn, data=np.asarray(v, np.float32))
    os.replace(tmp, path)
    return names


def _idx_of(lname, zero_based):
    tail = lname.split("_")[-1]
    n = int(tail) if tail.isdigit() else 0
    return n + 1 if zero_based else n


# ----------------------------------------------------------------------------------------------
# Random weights, inputs, calibration
# ----------------------------------------------------------------------------------------------
def make_inputs(rng, n):
    imgs = []
    for _ in range(n):
        lo = torch.from_numpy(rng.normal(0, 0.55, (1, 3, 9, 9)))
        mid = torch.from_numpy(rng.normal(0, 0.25, (1, 3, 40, 40)))
        up = (F.interpolate(lo, size=(299, 299), mode="bilinear", align_corners=False)
              + F.interpolate(mid, size=(299, 299), mode="bilinear", align_corners=False))
        img = up[0].permute(1, 2, 0).numpy() + rng.normal(0, 0.05, (299, 299, 3))
        imgs.append(np.clip(img, -1, 1))
    return np.stack(imgs).astype(np.float32)


def make_weights(rng, x):
    W = {"conv": {}, "bn": {}, "dense": None}
    for i in range(1, ti.NUM_CONVS + 1):
        kh, kw, cin, cout = ti.kernel_shape(i)
        W["conv"][i] = (rng.normal(0, 1, (kh, kw, cin, cout)) * np.sqrt(2.0 / (kh * kw * cin))).astype(np.float32)

    def calibrate(idx, y):  # y: conv output, NCHW float64
        mean = y.mean(dim=(0, 2, 3)).numpy()
        var = y.var(dim=(0, 2, 3), unbiased=False).numpy()
        c = mean.shape[0]
        mean = mean + 0.05 * np.sqrt(var) * rng.normal(0, 1, c)
        var = np.maximum(var, 1e-4) * np.exp(0.1 * rng.normal(0, 1, c))
        beta = rng.normal(0.1, 0.3, c)
        W["bn"][idx] = tuple(a.astype(np.float32) for a in (beta, mean, var))

    ti.forward(x, weights=W, dtype=torch.float64, on_conv=calibrate)
    W["dense"] = ((rng.normal(0, 1, (2048, 1000)) * 3 / np.sqrt(2048)).astype(np.float32),
                  rng.normal(0, 0.1, 1000).astype(np.float32))
    return W


# ----------------------------------------------------------------------------------------------
# Single-op cases
# ----------------------------------------------------------------------------------------------
def layer_cases(rng):
    T = lambda a: torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)  # noqa: E731
    B = lambda t: t.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)  # noqa: E731
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    cases = {}
    convs = [  # name, H, W, cin, cout, kh, kw, stride, padding
        ("conv_1x1", 7, 9, 5, 7, 1, 1, 1, "same"),
        ("conv_3x3_same", 7, 9, 3, 8, 3, 3, 1, "same"),
        ("conv_3x3_valid", 7, 9, 6, 5, 3, 3, 1, "valid"),
        ("conv_5x5_same", 7, 9, 4, 6, 5, 5, 1, "same"),
        ("conv_1x7_same", 7, 9, 9, 11, 1, 7, 1, "same"),
        ("conv_7x1_same", 9, 7, 7, 9, 7, 1, 1, "same"),
        ("conv_1x3_same", 3, 3, 13, 17, 1, 3, 1, "same"),
        ("conv_3x1_same", 1, 1, 12, 10, 3, 1, 1, "same"),
        ("conv_3x3_s2_valid", 9, 11, 5, 7, 3, 3, 2, "valid"),
        # H=8: TF pads 0 before / 1 after (asymmetric); W=7: 1/1. (odd sizes are symmetric for k3 s2)
        ("conv_3x3_s2_same", 8, 7, 6, 9, 3, 3, 2, "same"),
        ("conv_1x1_s2_valid", 7, 9, 8, 6, 1, 1, 2, "valid"),
    ]
    for name, h, w, cin, cout, kh, kw, s, p in convs:
        x = f32(rng.normal(0, 1, (2, h, w, cin)))
        k = f32(rng.normal(0, 1, (kh, kw, cin, cout)) / np.sqrt(kh * kw * cin))
        y = ti.conv2d_tf(T(x), torch.from_numpy(k.astype(np.float64)).permute(3, 2, 0, 1), s, p)
        mean = y.mean(dim=(0, 2, 3)).numpy() + 0.1 * rng.normal(0, 1, cout)
        var = np.maximum(y.var(dim=(0, 2, 3), unbiased=False).numpy(), 0.05) * np.exp(0.2 * rng.normal(0, 1, cout))
        beta = rng.normal(0.1, 0.3, cout)
        beta, mean, var = f32(beta), f32(mean), f32(var)
        yy = ti.bn_relu(y, *(torch.from_numpy(a.astype(np.float64)) for a in (beta, mean, var)))
        cases[name] = dict(attrs=dict(op="conv_bn_relu", kh=kh, kw=kw, stride=s, padding=p),
                           data=dict(x=x, kernel=k, beta=beta, moving_mean=mean,
                                     moving_variance=var, y=B(yy)))
    pools = [  # name, op, H, W, C, k, s, padding
        ("max_pool_3x3_s2_valid", "max_pool", 9, 11, 5, 3, 2, "valid"),
        ("max_pool_3x3_s2_same", "max_pool", 8, 7, 4, 3, 2, "same"),
        ("avg_pool_3x3_s1_same", "avg_pool", 7, 9, 6, 3, 1, "same"),
        ("avg_pool_3x3_s1_same_1x1", "avg_pool", 1, 1, 5, 3, 1, "same"),
        ("avg_pool_3x3_s2_same", "avg_pool", 8, 9, 3, 3, 2, "same"),
        ("avg_pool_3x3_s1_valid", "avg_pool", 5, 7, 4, 3, 1, "valid"),
    ]
    for name, op, h, w, c, k, s, p in pools:
        x = f32(rng.normal(0, 1, (2, h, w, c)))
        fn = ti.max_pool_tf if op == "max_pool" else ti.avg_pool_tf
        cases[name] = dict(attrs=dict(op=op, k=k, stride=s, padding=p),
                           data=dict(x=x, y=B(fn(T(x), k, s, p))))
    xs = [f32(rng.normal(0, 1, (2, 3, 5, c))) for c in (3, 5, 7)]
    cases["concat"] = dict(attrs=dict(op="concat"),
                           data=dict(x0=xs[0], x1=xs[1], x2=xs[2], y=np.concatenate(xs, axis=3)))
    x = f32(np.abs(rng.normal(0, 1, (2, 7, 9, 11))))
    cases["global_avg_pool"] = dict(attrs=dict(op="global_avg_pool"),
                                    data=dict(x=x, y=f32(x.astype(np.float64).mean(axis=(1, 2)))))
    x = f32(rng.normal(0, 1, (2, 13)))
    k = f32(rng.normal(0, 1, (13, 9)) / np.sqrt(13))
    b = f32(rng.normal(0, 0.1, 9))
    cases["dense"] = dict(attrs=dict(op="dense"),
                          data=dict(x=x, kernel=k, bias=b,
                                    y=f32(x.astype(np.float64) @ k.astype(np.float64) + b)))
    return cases


# ----------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------
def write_bad(src, bad_dir):
    os.makedirs(bad_dir, exist_ok=True)

    def edited(fname, edit):
        dst = os.path.join(bad_dir, fname)
        tmp = tmp_of(dst)
        shutil.copyfile(src, tmp)
        with h5py.File(tmp, "r+") as f:
            edit(f)
        os.replace(tmp, dst)

    def raw(fname, data):
        dst = os.path.join(bad_dir, fname)
        with open(tmp_of(dst), "wb") as fh:
            fh.write(data)
        os.replace(tmp_of(dst), dst)

    def replace_ds(f, path, data):
        del f[path]
        f.create_dataset(path, data=data)

    def missing_layer(f):
        del f["conv2d_50"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"conv2d_50"])

    def wrong_shape(f):
        p = "conv2d_10/conv2d_10/kernel:0"
        assert f[p].shape == (3, 3, 64, 96)
        replace_ds(f, p, np.zeros((3, 3, 64, 97), np.float32))

    def wrong_dtype(f):
        p = "batch_normalization_3/batch_normalization_3/moving_mean:0"
        replace_ds(f, p, f[p][()].astype(np.float64))

    def set_value(path, index, value):
        def e(f):
            a = f[path][()]
            a[index] = value
            f[path][...] = a
        return e

    def no_beta(f):
        g = f["batch_normalization_30"]
        assert b"batch_normalization_30/beta:0" in list(g.attrs["weight_names"])
        del g["batch_normalization_30/beta:0"]

    def wrong_rank(f):
        p = "conv2d_2/conv2d_2/kernel:0"
        replace_ds(f, p, f[p][()].reshape(3 * 3 * 32, 32))

    edited("missing_layer.h5", missing_layer)
    edited("wrong_shape.h5", wrong_shape)
    edited("wrong_dtype.h5", wrong_dtype)
    edited("nan_value.h5", set_value("conv2d_7/conv2d_7/kernel:0", (0, 0, 0, 0), np.nan))
    edited("inf_value.h5", set_value("batch_normalization_20/batch_normalization_20/moving_variance:0", 0, np.inf))
    edited("negative_variance.h5", set_value("batch_normalization_5/batch_normalization_5/moving_variance:0", 1, -0.5))
    with open(src, "rb") as fh:
        blob = fh.read()
    raw("truncated.h5", blob[: int(len(blob) * 0.6)])
    raw("not_hdf5.h5", b"this is not an HDF5 file\n" * 40)
    raw("empty.h5", b"")
    dst = os.path.join(bad_dir, "no_layer_names.h5")
    with h5py.File(tmp_of(dst), "w") as f:
        f.attrs["backend"] = b"tensorflow"
        g = f.create_group("conv2d_1")
        g.attrs["weight_names"] = np.array([b"conv2d_1/kernel:0"])
        g.create_dataset("conv2d_1/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
    os.replace(tmp_of(dst), dst)
    edited("missing_weight_dataset.h5", no_beta)
    edited("wrong_rank.h5", wrong_rank)
    man = os.path.join(bad_dir, "manifest.txt")
    with open(tmp_of(man), "w") as fh:
        for name, why in BAD:
            fh.write("%s\t%s\n" % (name, why))
    os.replace(tmp_of(man), man)


# ----------------------------------------------------------------------------------------------
def up_to_date(out):
    ref = os.path.join(out, FILE_REF)
    need = [FILE_1B, FILE_0B, os.path.join("bad", "manifest.txt")] + [os.path.join("bad", n) for n, _ in BAD]
    if not os.path.exists(ref) or not all(os.path.exists(os.path.join(out, n)) for n in need):
        return False
    try:
        with h5py.File(ref, "r") as f:
            return int(f.attrs.get("format_version", -1)) == FORMAT_VERSION
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="directory for every reference file (required unless --weights-only)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--weights-only", metavar="FILE", default=None,
                    help="write only the seeded random Keras-layout weight file (1-based, no top) to FILE")
    a = ap.parse_args()
    if a.weights_only:
        if os.path.exists(a.weights_only) and not a.force:
            print("%s: exists; use --force to regenerate" % a.weights_only)
            return
        torch.set_num_threads(2)
        rng = np.random.default_rng(a.seed)
        W = make_weights(rng, make_inputs(rng, a.images))
        write_keras_h5(a.weights_only, W, zero_based=False, include_top=False, under_model_weights=False,
                       split_names=0, empty_weight_names=np.array([], dtype=np.float64))
        print("random Inception v3 weights (Keras layout, seed %d): %s" % (a.seed, a.weights_only))
        return
    if not a.out:
        ap.error("--out is required (or --weights-only FILE)")
    if not a.force and up_to_date(a.out):
        print("%s: up to date (format_version %d); use --force to regenerate" % (a.out, FORMAT_VERSION))
        return
    torch.set_num_threads(2)
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    ref_path = os.path.join(a.out, FILE_REF)
    if os.path.exists(ref_path):
        os.remove(ref_path)  # reference.h5 is written last: its presence marks a complete DIR
    rng = np.random.default_rng(a.seed)
    x = make_inputs(rng, a.images)
    W = make_weights(rng, x)
    print("weights calibrated: %.1f s" % (time.time() - t0))

    p1 = os.path.join(a.out, FILE_1B)
    write_keras_h5(p1, W, zero_based=False, include_top=True, under_model_weights=False,
                   split_names=0, empty_weight_names=np.array([], dtype=np.float64))
    write_keras_h5(os.path.join(a.out, FILE_0B), W, zero_based=True, include_top=False,
                   under_model_weights=True, split_names=3,
                   empty_weight_names=np.array([], dtype="S1"))
    write_bad(p1, os.path.join(a.out, "bad"))
    print("weight files written: %.1f s" % (time.time() - t0))

    # Reference: from the file just written (end-to-end through the loader), float64 compute.
    WL = ti.load_keras_h5(p1)
    _, taps = ti.forward(x, taps=True, weights=WL, dtype=torch.float64)
    _, taps32 = ti.forward(x, taps=True, weights=WL, dtype=torch.float32)

    def rel(name):
        d = np.abs(taps32[name].astype(np.float64) - taps[name])
        return float(d.max() / np.abs(taps[name]).max()), float(np.median(d / (np.abs(taps[name]) + 1e-30)))

    relb, medb = rel("bottleneck")
    relp, _ = rel("predictions")
    print("per-block activation stats (float64 reference):")
    for name in ti.BLOCK_NAMES + ["bottleneck", "predictions"]:
        v = taps[name]
        print("  %-11s %-18s std %.4f mean %.4f max %.3f zero-frac %.3f" % (
            name, str(v.shape), v.std(), v.mean(), v.max(), float((v == 0).mean())))
    print("float32 vs float64 torch forward: bottleneck max|d|/max|ref| %.3g (median elementwise rel %.3g),"
          " predictions %.3g" % (relb, medb, relp))
    print("top-1 class per image:", taps["predictions"].argmax(1).tolist(),
          "max prob:", np.round(taps["predictions"].max(1), 4).tolist())

    cases = layer_cases(rng)
    tmp = tmp_of(ref_path)
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["generator"] = np.bytes_(b"tests/reference/make_reference.py")
        f.attrs["torch_version"] = np.bytes_(torch.__version__.encode())
        f.attrs["seed"] = a.seed
        f.attrs["weights_file"] = np.bytes_(FILE_1B.encode())
        f.attrs["f32_vs_f64_bottleneck_max_rel"] = relb
        f.attrs["f32_vs_f64_predictions_max_rel"] = relp
        f.create_dataset("inputs", data=x)
        g = f.create_group("blocks")
        for name in ti.BLOCK_NAMES + ["bottleneck", "predictions"]:
            g.create_dataset(name, data=taps[name].astype(np.float32))
        lg = f.create_group("layers")
        for cname, c in cases.items():
            cg = lg.create_group(cname)
            for k, v in c["attrs"].items():
                cg.attrs[k] = np.bytes_(v.encode()) if isinstance(v, str) else v
            for k, v in c["data"].items():
                cg.create_dataset(k, data=np.asarray(v, np.float32))
    os.replace(tmp, ref_path)
    print("wrote %s (%s, %s, bad/, %s) in %.1f s" % (a.out, FILE_1B, FILE_0B, FILE_REF, time.time() - t0))


if __name__ == "__main__":
    main()
