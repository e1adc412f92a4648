#!/usr/bin/env python3
"""tests/reference/keras_head.py: Keras as the judge of our head file (models/head_keras.h).
Run with the tf_keras Python (CMake's ENGINE_KERAS_PYTHON, scripts/keras_env.sh), by
tests/test_predict.cpp:
    python keras_head.py --judge HEAD.h5 DATA.h5 [--judge ...] [--make OUT.h5 DATA.h5 SEED K H1 [H2 ...]] ...
--judge: tf_keras.models.load_model(HEAD) must load our file; its predict on DATA:/features
  (N, 2048) float32 must equal DATA:/ours (our HeadCpu::predict on the same features) within
  --atol (1e-5 by default). Prints the largest difference per head.
--make: Keras writes a head itself: Sequential(Input 2048, Dense(H1, relu), ..., Dense(K,
  softmax)) with random weights (Glorot-scaled normal kernels, non-zero biases, seeded numpy),
  compiled with RMSprop and saved by model.save(OUT) (legacy HDF5); our root attributes
  class_names, preprocessing, inception_weights_sha256 are then added with h5py; Keras's
  predictions on DATA:/features are written to DATA:/keras for the C++ reader to match.
Exit status 0 when every judged head matched, 1 otherwise, 2 on bad arguments."""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402


def make(out, data, seed, classes, hidden):
    rng = np.random.default_rng(seed)
    with h5py.File(data, "r") as f:
        x = f["features"][:].astype(np.float32)
    layers = [keras.layers.InputLayer(input_shape=(x.shape[1],))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers += [keras.layers.Dense(classes, activation="softmax")]
    model = keras.Sequential(layers)
    weights = []
    fan_in = x.shape[1]
    for units in list(hidden) + [classes]:
        weights.append((rng.standard_normal((fan_in, units)) * np.sqrt(2.0 / (fan_in + units))).astype(np.float32))
        weights.append((rng.standard_normal(units) * 0.1).astype(np.float32))
        fan_in = units
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3), loss="categorical_crossentropy")
    model.save(out)
    with h5py.File(out, "r+") as f:
        f.attrs["class_names"] = np.array(["class_%d" % k for k in range(classes)], dtype=object)
        f.attrs["preprocessing"] = "size=299;resize=antialias;dct_min_side=299;exif_orientation=1;scale=x/127.5-1"
        f.attrs["inception_weights_sha256"] = "0" * 64
    p = model.predict(x, batch_size=256, verbose=0).astype(np.float32)
    with h5py.File(data, "r+") as f:
        if "keras" in f:
            del f["keras"]
        f["keras"] = p
    print("keras wrote %s: 2048-%s-%d, %d predictions, prob range [%.3g, %.3g]"
          % (out, "-".join(map(str, hidden)), classes, p.shape[0], p.min(), p.max()))


def judge(head, data, atol):
    model = keras.models.load_model(head)
    with h5py.File(data, "r") as f:
        x = f["features"][:].astype(np.float32)
        ours = f["ours"][:].astype(np.float32)
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    shape = [x.shape[1]] + [l.units for l in dense]
    acts = [l.get_config()["activation"] for l in dense]
    p = model.predict(x, batch_size=256, verbose=0).astype(np.float32)
    if p.shape != ours.shape:
        print("FAIL %s: keras predicts shape %s, ours %s" % (head, p.shape, ours.shape))
        return False
    diff = np.abs(p.astype(np.float64) - ours.astype(np.float64))
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    good = bool(diff.max() <= atol)
    print("%s %s: load_model ok, Dense %s, activations %s, optimizer %s; %d x %d probabilities, "
          "max |keras - ours| %.3g at %s (keras %.9g, ours %.9g), tolerance %g"
          % ("ok" if good else "FAIL", head, "-".join(map(str, shape)), acts,
             type(model.optimizer).__name__ if model.optimizer is not None else None,
             p.shape[0], p.shape[1], diff.max(), worst, p[worst], ours[worst], atol))
    return good


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--judge", nargs=2, action="append", default=[], metavar=("HEAD", "DATA"))
    ap.add_argument("--make", nargs="+", action="append", default=[],
                    metavar="OUT DATA SEED K H1", help="OUT DATA SEED K H1 [H2 ...]")
    ap.add_argument("--atol", type=float, default=1e-5)
    a = ap.parse_args()
    if not a.judge and not a.make:
        ap.error("nothing to do")
    for m in a.make:
        if len(m) < 5:
            ap.error("--make needs OUT DATA SEED K H1 [H2 ...]")
        make(m[0], m[1], int(m[2]), int(m[3]), [int(h) for h in m[4:]])
    ok = all([judge(h, d, a.atol) for h, d in a.judge])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
