"""Keras and TensorFlow themselves as the reference (tests/test_keras.cpp reads what this writes).

Run with the Keras/TensorFlow Python (ENGINE_KERAS_PYTHON: tensorflow-cpu + tf-keras, see
scripts/keras_env.sh):  python tests/reference/keras_reference.py --out DIR [--force]
Writes into DIR/keras/ (about 40 s on 2 cores; a complete directory written by the same version of
this script is left alone):

- inception_v3_keras_0based.h5: tf_keras.applications.InceptionV3(weights=None, include_top=False,
  pooling='avg') with seeded weights, written by Keras' own `model.save_weights` (h5, the 0-based
  names TF2 Keras writes: conv2d, conv2d_1, ..., batch_normalization, ...). Conv kernels are
  He-normal from a seeded numpy generator; every batch norm gets seeded non-trivial statistics:
  its conv's output mean/variance over the reference PNGs (measured layer by layer in one eager
  pass through the Keras layers themselves) perturbed by seeded noise (mean + 0.3 std * N(0,1),
  variance * exp(0.3 N(0,1))) and beta = N(0.1, 0.3), so BN is far from identity yet every
  activation stays unit-scale.
- inception_v3_keras_1based.h5: the same file rewritten in the Keras 2 layout of the published
  inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 (conv2d_1.., batch_normalization_1..,
  activation_1.., every group and dataset renamed, same layer order, same bytes per weight).
- images/: 299x299 PNGs (Keras forward test) and test JPEGs/PNGs for the preprocessing tests:
  600x450 (HAM10000 size) and 1024x1024 (BCN_20000 size) 4:2:0 JPEGs, an odd 517x389 4:2:0, a
  4:4:4, a progressive, a grayscale JPEG, one with EXIF orientation 6, an Adobe CMYK JPEG, and PNGs
  (RGB, RGBA, gray, palette, 16-bit RGB). Photo-like content: skin-toned gradient, an irregular
  dark lesion, hairs (sharp edges), texture noise.
- keras_reference.h5 (written last; attrs format_version, script_sha256, tensorflow_version):
    /forward/inputs (N,299,299,3) f32: what was fed to Keras: PIL-decoded PNG pixels x / 127.5 - 1
    /forward attr names: the PNG file names;  /forward/bottleneck (N,2048): model.predict(inputs)
    /forward/bottleneck_eager: the eager layer-by-layer pass of the calibration (same weights);
      equal to model.predict with TF_ENABLE_ONEDNN_OPTS=0 (measured max |diff| 0), so TF's float32
      error is measured against the float64 model below, not by this
    /forward/bottleneck_1based: model.predict after load_weights of the 1-based file into a fresh
      Keras model (shows the rewrite holds the same weights)
    /forward/bottleneck_fp64 (N,2048) f64: the SAME Keras model built in float64
      (tf_keras.backend.set_floatx('float64') before building, then load_weights of the 0-based
      file, TF_ENABLE_ONEDNN_OPTS=0) predicting float64(inputs): the exact answer for these
      float32 weights and inputs, up to float64 rounding (~1e-15 relative).
      attr tf_fp32_rel_l2 (N,): TF's own float32 error, |bottleneck - bottleneck_fp64| / |fp64|.
    /forward/taps_fp64/<tap> (1,H,W,C) f32: image 0's float64 activations at the stem
      (max_pooling2d_1), mixed2, mixed7 and mixed10, rounded to float32 for size (3e-8 relative,
      far below the 1e-6..4e-5 errors they measure); attr tf_fp32_rel_l2: TF float32's own error
      at that tap (its float32 sub-model vs float64, unrounded).
    /decode/<img>/tf_default   tf.io.decode_jpeg(bytes, channels=3) (dct_method '' = INTEGER_FAST)
    /decode/<img>/tf_accurate  tf.io.decode_jpeg(bytes, channels=3, dct_method='INTEGER_ACCURATE')
    /resize/<img>/tf1          tf.compat.v1.image.resize_bilinear(tf_default, (299,299),
                               align_corners=False, half_pixel_centers=False) / 127.5 - 1
                               (retrain.py's decode + resize, Keras scaling; float32 throughout)
    /resize/<img>/tf2_bilinear, tf2_antialias: tf.image.resize(tf_accurate, (299,299), 'bilinear',
                               antialias=False/True) / 127.5 - 1  (same decoded pixels as ours, so
                               only the resize is compared)
    /resize/<img>/tf2_bilinear_default_decode, tf2_antialias_default_decode: the same on
                               tf_default (what a TF2 user gets from decode_jpeg's defaults)
    /bottleneck/<img>/<pipeline>  model.predict of each /resize/<img>/<pipeline> (JPEGs listed in
                               BOTTLENECK_IMAGES), for end-to-end comparisons.
  For PNG files /decode/<img>/tf_default is tf.io.decode_jpeg on the PNG bytes (TF decodes PNG
  there too) and tf_accurate is absent.
"""
import argparse
import hashlib
import io
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# TensorFlow's oneDNN graph rewrites make model.predict and the eager call of the same model differ
# by relative L2 ~1e-5 (measured: 2.3e-6..1e-5); with them off TF's own kernels agree with
# themselves exactly, so the reference is TF's plain float32 arithmetic.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FORMAT_VERSION = 2  # 2: /forward/bottleneck_fp64 and /forward/taps_fp64
SUBDIR = "keras"
FILE_0B = "inception_v3_keras_0based.h5"
FILE_1B = "inception_v3_keras_1based.h5"
FILE_REF = "keras_reference.h5"
FORWARD_PNGS = ["fwd_0.png", "fwd_1.png", "fwd_2.png"]
# (file name, (width, height), PIL save options)
JPEGS = [
    ("ham_600x450.jpg", (600, 450), dict(quality=90, subsampling=2)),
    ("bcn_1024x1024.jpg", (1024, 1024), dict(quality=92, subsampling=2)),
    ("odd_517x389.jpg", (517, 389), dict(quality=85, subsampling=2)),
    ("s444_640x480.jpg", (640, 480), dict(quality=95, subsampling=0)),
    ("prog_600x450.jpg", (600, 450), dict(quality=88, subsampling=2, progressive=True)),
    ("gray_450x600.jpg", (450, 600), dict(quality=90)),
    ("exif6_600x450.jpg", (600, 450), dict(quality=90, subsampling=2)),
    ("cmyk_400x300.jpg", (400, 300), dict(quality=90)),
]
PNGS = [
    ("rgb_600x450.png", (600, 450)),
    ("rgba_333x250.png", (333, 250)),
    ("gray_300x301.png", (300, 301)),
    ("palette_320x240.png", (320, 240)),
    ("rgb16_310x230.png", (310, 230)),
]
BOTTLENECK_IMAGES = ["ham_600x450.jpg", "bcn_1024x1024.jpg", "odd_517x389.jpg"]
PIPELINES_JPEG = ["tf1", "tf2_bilinear", "tf2_antialias", "tf2_bilinear_default_decode",
                  "tf2_antialias_default_decode"]


def tmp_of(path):
    return "%s.tmp-%d" % (path, os.getpid())


def script_sha256():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def photo_like(rng, w, h):
    """Skin-toned gradient + irregular dark lesion + hairs + texture: float RGB in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = xx / w, yy / h
    base = np.stack([200 + 30 * u - 20 * v, 150 + 20 * v - 10 * u, 130 + 15 * u * v], -1)
    # low-frequency colour variation
    for _ in range(4):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6.3)
        base += rng.normal(0, 8, 3) * np.sin(2 * np.pi * (fx * u + fy * v) + ph)[..., None]
    # lesion: ellipse with a wobbly border
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    r0 = rng.uniform(0.15, 0.3) * min(w, h)
    ang = np.arctan2(yy - cy, (xx - cx) * rng.uniform(0.7, 1.3))
    rad = np.hypot(xx - cx, yy - cy)
    border = r0 * (1 + sum(rng.uniform(0.03, 0.12) * np.sin(k * ang + rng.uniform(0, 6.3))
                           for k in (2, 3, 5, 7)))
    inside = 1 / (1 + np.exp((rad - border) / rng.uniform(1.0, 4.0)))
    lesion = np.array([90, 55, 40]) + rng.normal(0, 10, 3)
    core = np.exp(-(rad / (0.5 * r0)) ** 2)[..., None] * np.array([-30, -25, -15])
    img = base * (1 - inside[..., None]) + (lesion + core) * inside[..., None]
    # hairs: thin dark curves with hard edges
    for _ in range(6):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        th = rng.uniform(0, np.pi)
        curv = rng.uniform(-2e-3, 2e-3)
        d = (xx - x0) * np.sin(th) - (yy - y0) * np.cos(th)
        t = (xx - x0) * np.cos(th) + (yy - y0) * np.sin(th)
        d = d - curv * t ** 2
        width = rng.uniform(0.8, 2.5)
        img = np.where((np.abs(d) < width)[..., None], np.array([40, 30, 25]), img)
    # a ruler-like block of sharp rectangles (strong edges)
    bx, by = int(rng.uniform(0.05, 0.2) * w), int(rng.uniform(0.75, 0.85) * h)
    for k in range(8):
        img[by:by + max(2, h // 40), bx + k * max(3, w // 60): bx + k * max(3, w // 60) + 2] = 250
    img += rng.normal(0, 4, img.shape)  # texture
    return np.clip(img, 0, 255)


def write_images(rng, d):
    os.makedirs(d, exist_ok=True)
    for name in FORWARD_PNGS:
        Image.fromarray(np.round(photo_like(rng, 299, 299)).astype(np.uint8)).save(
            os.path.join(d, name))
    for name, (w, h), opts in JPEGS:
        a = np.round(photo_like(rng, w, h)).astype(np.uint8)
        im = Image.fromarray(a)
        path = os.path.join(d, name)
        if name.startswith("gray"):
            im = im.convert("L")
        if name.startswith("cmyk"):
            im = im.convert("CMYK")  # PIL writes an Adobe APP14 marker, inverted CMYK
        if name.startswith("exif6"):
            ex = Image.Exif()
            ex[0x0112] = 6  # Orientation: rotate 90 CW to display
            opts = dict(opts, exif=ex.tobytes())
        im.save(path, "JPEG", **opts)
    for name, (w, h) in PNGS:
        a = np.round(photo_like(rng, w, h)).astype(np.uint8)
        path = os.path.join(d, name)
        if name.startswith("rgba"):
            alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, alpha], -1), "RGBA").save(path)
        elif name.startswith("gray"):
            Image.fromarray(a).convert("L").save(path)
        elif name.startswith("palette"):
            Image.fromarray(a).quantize(64).save(path)
        elif name.startswith("rgb16"):
            write_png16(path, a.astype(np.uint16) * 257 + rng.integers(0, 257, a.shape).astype(np.uint16))
        else:
            Image.fromarray(a).save(path)


def write_png16(path, a16):
    """16-bit RGB PNG without extra packages (PIL cannot write 16-bit RGB)."""
    import struct
    import zlib
    h, w, _ = a16.shape
    raw = b"".join(b"\x00" + a16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, data):
        c = struct.pack(">I", len(data)) + t + data
        return c + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


# ---------------------------------------------------------------------------------------------
# Keras model with seeded weights
# ---------------------------------------------------------------------------------------------
def build_model(tf_keras):
    tf_keras.backend.clear_session()  # fresh name counters: conv2d, conv2d_1, ... (0-based)
    return tf_keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                             input_shape=(299, 299, 3))


def seed_weights(tf, model, rng, x):
    """He-normal kernels; BN statistics calibrated on x (one eager pass through the Keras layers
    themselves, in model.layers order, which is topological) and perturbed by seeded noise."""
    vals = {}
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            vals[layer.output.name] = tf.constant(x)
            continue
        ins = layer._inbound_nodes[0].input_tensors
        args = [vals[t.name] for t in ins] if isinstance(ins, (list, tuple)) else vals[ins.name]
        cls = layer.__class__.__name__
        if cls == "Conv2D":
            k = layer.kernel.shape
            fan_in = k[0] * k[1] * k[2]
            layer.kernel.assign(rng.normal(0, np.sqrt(2.0 / fan_in), k).astype(np.float32))
        elif cls == "BatchNormalization":
            y = args.numpy().astype(np.float64)
            mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
            c = mean.shape[0]
            mean = mean + 0.3 * np.sqrt(var) * rng.normal(0, 1, c)
            var = np.maximum(var, 1e-4) * np.exp(0.3 * rng.normal(0, 1, c))
            beta = rng.normal(0.1, 0.3, c)
            layer.set_weights([beta.astype(np.float32), mean.astype(np.float32),
                               var.astype(np.float32)])
        out = layer(args, training=False)
        vals[layer.output.name] = out
    return vals[model.output.name].numpy()


# Image 0's taps stored in float64 (our tap name -> Keras layer name); see the docstring.
FP64_TAPS = [("stem", "max_pooling2d_1"), ("mixed2", "mixed2"), ("mixed7", "mixed7"),
             ("mixed10", "mixed10")]


def tapped_predict(tf_keras, model, x):
    """model.predict of [bottleneck] + the FP64_TAPS activations of image 0."""
    sub = tf_keras.Model(model.input, [model.output] +
                         [model.get_layer(k).output for _, k in FP64_TAPS])
    outs = sub.predict(x, batch_size=len(x), verbose=0)
    return outs[0], [o[:1] for o in outs[1:]]


def float64_reference(tf_keras, weights, x):
    """The same Keras model in float64: floatx float64 before building, then load_weights."""
    tf_keras.backend.set_floatx("float64")
    try:
        m = build_model(tf_keras)
        m.load_weights(weights)
        assert m.layers[2].compute_dtype == "float64", m.layers[2].compute_dtype
        return tapped_predict(tf_keras, m, x.astype(np.float64))
    finally:
        tf_keras.backend.set_floatx("float32")


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


ONE_BASED = ("conv2d", "batch_normalization", "activation", "max_pooling2d", "average_pooling2d",
             "concatenate")


def to_one_based(name):
    for base in ONE_BASED:
        if name == base:
            return base + "_1"
        if name.startswith(base + "_") and name[len(base) + 1:].isdigit():
            return "%s_%d" % (base, int(name[len(base) + 1:]) + 1)
    return name


def rewrite_one_based(src, dst):
    """The Keras 2 layout of the published notop file: every 0-based group/dataset renamed."""
    tmp = tmp_of(dst)
    with h5py.File(src, "r") as f, h5py.File(tmp, "w") as g:
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = "2.1.5"
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        g.attrs["layer_names"] = np.array([to_one_based(n).encode() for n in names])
        for n in names:
            src_g, dst_g = f[n], g.create_group(to_one_based(n))
            wn = [w.decode() if isinstance(w, bytes) else str(w) for w in src_g.attrs["weight_names"]]
            new_wn = []
            for w in wn:
                prefix, leaf = w.split("/", 1)
                nw = to_one_based(prefix) + "/" + leaf
                new_wn.append(nw.encode())
                dst_g.create_dataset(nw, data=src_g[w][()])
            dst_g.attrs["weight_names"] = (np.array(new_wn) if new_wn
                                           else np.zeros((0,), dtype=np.float64))
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------------------
def is_complete(out):
    p = os.path.join(out, SUBDIR, FILE_REF)
    if not os.path.exists(p):
        return False
    try:
        with h5py.File(p, "r") as f:
            return (int(f.attrs["format_version"]) == FORMAT_VERSION
                    and f.attrs["script_sha256"] == script_sha256())
    except Exception:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if not a.force and is_complete(a.out):
        print("keras reference in %s is up to date" % os.path.join(a.out, SUBDIR))
        return 0
    t0 = time.time()
    import tensorflow as tf
    import tf_keras
    tf.config.threading.set_intra_op_parallelism_threads(2)

    d = os.path.join(a.out, SUBDIR)
    if os.path.exists(d):
        shutil.rmtree(d)
    imgdir = os.path.join(d, "images")
    rng = np.random.default_rng(a.seed)
    write_images(rng, imgdir)

    # Keras forward inputs: PIL-decoded PNG pixels, x / 127.5 - 1 (Keras preprocess_input 'tf').
    x = np.stack([np.asarray(Image.open(os.path.join(imgdir, n)).convert("RGB"), np.float32)
                  for n in FORWARD_PNGS]) / np.float32(127.5) - np.float32(1)
    assert x.dtype == np.float32
    model = build_model(tf_keras)
    assert model.layers[1].name == "conv2d", model.layers[1].name
    eager = seed_weights(tf, model, rng, x)
    p0 = os.path.join(d, FILE_0B)
    model.save_weights(tmp_of(p0) + ".h5")  # the .h5 suffix selects Keras' h5 writer
    os.replace(tmp_of(p0) + ".h5", p0)
    rewrite_one_based(p0, os.path.join(d, FILE_1B))
    bottleneck = model.predict(x, batch_size=len(FORWARD_PNGS), verbose=0)
    print("forward: eager calibration pass vs model.predict max |diff| %.3g; bottleneck mean %.3f "
          "std %.3f" % (np.abs(eager - bottleneck).max(), bottleneck.mean(), bottleneck.std()))
    m1 = build_model(tf_keras)
    m1.load_weights(os.path.join(d, FILE_1B))  # Keras loads by layer order, names ignored
    bottleneck_1b = m1.predict(x, batch_size=len(FORWARD_PNGS), verbose=0)
    assert np.array_equal(bottleneck_1b, bottleneck), "1-based rewrite changed the weights"
    _, taps32 = tapped_predict(tf_keras, model, x)
    bottleneck64, taps64 = float64_reference(tf_keras, p0, x)
    tf32_err = [rel_l2(bottleneck[i], bottleneck64[i]) for i in range(len(x))]
    print("forward: TF float32 model.predict vs the float64 model, relative L2 per image: %s"
          % " ".join("%.3g" % e for e in tf32_err))

    def unit(t):  # Keras 'tf' scaling in float32
        return (tf.cast(t, tf.float32) / np.float32(127.5) - np.float32(1)).numpy()

    ref = os.path.join(d, FILE_REF)
    tmp = tmp_of(ref)
    with h5py.File(tmp, "w") as f:
        f.attrs["tensorflow_version"] = tf.__version__
        f.attrs["keras_version"] = tf_keras.__version__
        f.create_dataset("forward/inputs", data=x)
        f["forward"].attrs["names"] = np.array([n.encode() for n in FORWARD_PNGS])
        f.create_dataset("forward/bottleneck", data=bottleneck)
        f.create_dataset("forward/bottleneck_1based", data=bottleneck_1b)
        f.create_dataset("forward/bottleneck_eager", data=eager)
        d64 = f.create_dataset("forward/bottleneck_fp64", data=bottleneck64)
        d64.attrs["tf_fp32_rel_l2"] = np.array(tf32_err)
        for (tap, _), t32, t64 in zip(FP64_TAPS, taps32, taps64):
            dt = f.create_dataset("forward/taps_fp64/" + tap, data=t64.astype(np.float32))
            dt.attrs["tf_fp32_rel_l2"] = rel_l2(t32, t64)
            print("  tap %-8s TF float32 vs float64 relative L2 %.3g (image 0)" % (tap, rel_l2(t32, t64)))
        batch = []  # (img, pipeline, pixels) for the bottleneck references
        for name in [j[0] for j in JPEGS] + [p[0] for p in PNGS]:
            data = open(os.path.join(imgdir, name), "rb").read()
            dflt = tf.io.decode_jpeg(data, channels=3)
            f.create_dataset("decode/%s/tf_default" % name, data=dflt.numpy())
            r = {"tf1": unit(tf.compat.v1.image.resize_bilinear(
                dflt[None], (299, 299), align_corners=False, half_pixel_centers=False)[0])}
            if name.endswith(".jpg"):
                acc = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
                f.create_dataset("decode/%s/tf_accurate" % name, data=acc.numpy())
                for src, suffix in ((acc, ""), (dflt, "_default_decode")):
                    for aa in (False, True):
                        r["tf2_%s%s" % ("antialias" if aa else "bilinear", suffix)] = unit(
                            tf.image.resize(tf.cast(src, tf.float32), (299, 299), "bilinear",
                                            antialias=aa))
            for k, v in r.items():
                f.create_dataset("resize/%s/%s" % (name, k), data=v)
                if name in BOTTLENECK_IMAGES:
                    batch.append((name, k, v))
        y = model.predict(np.stack([b[2] for b in batch]), batch_size=8, verbose=0)
        for (name, k, _), row in zip(batch, y):
            f.create_dataset("bottleneck/%s/%s" % (name, k), data=row)
        f.attrs["script_sha256"] = script_sha256()
        f.attrs["format_version"] = FORMAT_VERSION
    os.replace(tmp, ref)
    print("keras reference written to %s in %.1f s (tensorflow %s, tf_keras %s)"
          % (d, time.time() - t0, tf.__version__, tf_keras.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
