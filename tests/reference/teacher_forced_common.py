"""Shared by tests/reference/train_reference.py (PyTorch) and tf_rmsprop_reference.py (TensorFlow):
the synthetic problem and the teacher-forcing file layout read by tests/test_head_training.cpp.
numpy + h5py only (each generator imports its own framework).

A reference runs its OWN free trajectory of a case; the file holds, for every step s, the state
AFTER the step (params, optimizer slots), the gradient of the step, its loss and learning rate.
The C++ test starts each step s from the reference's state (init for s = 0, else the stored
state after s - 1), so float32 differences cannot accumulate across steps.

Layout (format_version 2):
  attrs: format_version, generator, signature (what it was generated from), complete (1, last)
  /class_weights (K)
  /cases/<case>: attrs input, num_hidden, hidden_0.., classes, batch, steps;
                 x (steps, batch, input) float32, y (steps, batch) float32 labels,
                 init/dense_k/{kernel (in,out), bias (out)}
  /<variant>: attrs formula ("tf1" | "torch"), lr, rho, momentum, eps, decay_rate, decay_steps,
              staircase (0/1)
  /<variant>/<case>: attrs step0 (optimizer step counter of the first step);
              lr (steps) the learning rate the reference used, loss (steps),
              grads|params|ms|mom/dense_k/{kernel (steps,in,out), bias (steps,out)}: gradient of
              step s and the state after step s; optional ms_init|mom_init/dense_k/{kernel,bias}:
              the optimizer slots as the reference initialised them (before step 0).
The state before step 0 is init with the optimizer's initial slots (TF1: ms 1, torch: 0; mom 0).
"""
import argparse
import math
import os

import h5py
import numpy as np

FORMAT_VERSION = 2
CLASS_WEIGHTS = [1.0, 3.0]
# name: input, hidden, classes, batch, steps
CASES = {
    "small": (256, (64, 64), 2, 64, 40),   # every step teacher-forced, crosses lr decays
    "full": (2048, (512, 512), 2, 128, 1),  # the real head size, one step
}


def glorot(rng, fan_in, fan_out):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=(fan_in, fan_out)).astype(np.float32)


def make_case(name, seed):
    """Initial weights and batches of a case, from numpy only (independent of the engine)."""
    inp, hidden, k, batch, steps = CASES[name]
    rng = np.random.default_rng([seed, len(name), inp])
    dims = [inp] + list(hidden) + [k]
    init = [(glorot(rng, dims[i], dims[i + 1]), np.zeros(dims[i + 1], np.float32))
            for i in range(len(dims) - 1)]
    ys = rng.integers(0, k, size=(steps, batch)).astype(np.int32)
    xs = rng.uniform(0, 1, size=(steps, batch, inp)).astype(np.float32)
    # Class-dependent signal in the first features so training has something to learn.
    nsig = max(8, inp // 32)
    xs[:, :, :nsig] += (0.5 * ys[:, :, None]).astype(np.float32)
    return init, xs, ys


def lr_at(lr0, rate, decay_steps, stair, s):
    """tf.train.exponential_decay in double, rounded to float32 (what the engine computes)."""
    e = s / decay_steps
    if stair:
        e = math.floor(e)
    return float(np.float32(lr0 * rate ** e))


def signature(variants, seed, extra=""):
    """What the file was generated from: regenerated when any of it changes."""
    return repr((FORMAT_VERSION, sorted(CASES.items()), CLASS_WEIGHTS, list(variants), seed, extra))


def up_to_date(path, sig):
    try:
        with h5py.File(path, "r") as f:
            s = f.attrs.get("signature")
            s = s.decode() if isinstance(s, bytes) else s
            return (f.attrs.get("format_version") == FORMAT_VERSION and f.attrs.get("complete") == 1
                    and s == sig)
    except OSError:
        return False


def write_cases(f, cases, sig):
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["signature"] = np.bytes_(sig)
    f.create_dataset("class_weights", data=np.array(CLASS_WEIGHTS, np.float32))
    for name, (init, xs, ys) in cases.items():
        inp, hidden, k, batch, steps = CASES[name]
        g = f.create_group("cases/" + name)
        g.attrs["input"], g.attrs["classes"] = inp, k
        g.attrs["batch"], g.attrs["steps"] = batch, steps
        g.attrs["num_hidden"] = len(hidden)
        for i, h in enumerate(hidden):
            g.attrs["hidden_%d" % i] = h
        g.create_dataset("x", data=xs)
        g.create_dataset("y", data=ys.astype(np.float32))  # float32: the C++ reader's type
        for i, (kern, bias) in enumerate(init):
            g.create_dataset("init/dense_%d/kernel" % (i + 1), data=kern)
            g.create_dataset("init/dense_%d/bias" % (i + 1), data=bias)


def write_variant_attrs(f, v):
    name, formula, lr0, rho, mom, eps, rate, dsteps, stair = v
    g = f.require_group(name)
    g.attrs["formula"] = np.bytes_(formula)
    g.attrs["lr"], g.attrs["rho"], g.attrs["momentum"], g.attrs["eps"] = lr0, rho, mom, eps
    g.attrs["decay_rate"], g.attrs["decay_steps"], g.attrs["staircase"] = rate, dsteps, int(stair)
    return g


def write_run(f, variant, case, step0, run, slots_init=None):
    """run: dict lr (steps), loss (steps), and grads/params/ms/mom: lists over layers of
    (kernel (steps,in,out), bias (steps,out)). slots_init: optional dict ms/mom -> layer list."""
    g = f.create_group("%s/%s" % (variant, case))
    g.attrs["step0"] = step0
    g.create_dataset("lr", data=np.asarray(run["lr"], np.float32))
    g.create_dataset("loss", data=np.asarray(run["loss"], np.float32))
    z = dict(compression="gzip", compression_opts=1, shuffle=True)  # ms and zero slots shrink
    for key in ("grads", "params", "ms", "mom"):
        for i, (kern, bias) in enumerate(run[key]):
            g.create_dataset("%s/dense_%d/kernel" % (key, i + 1), data=np.asarray(kern, np.float32), **z)
            g.create_dataset("%s/dense_%d/bias" % (key, i + 1), data=np.asarray(bias, np.float32), **z)
    for key, layers in (slots_init or {}).items():
        for i, (kern, bias) in enumerate(layers):
            g.create_dataset("%s_init/dense_%d/kernel" % (key, i + 1), data=np.asarray(kern, np.float32))
            g.create_dataset("%s_init/dense_%d/bias" % (key, i + 1), data=np.asarray(bias, np.float32))


def open_tmp(out, file_name):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, file_name)
    return path, "%s.tmp-%d" % (path, os.getpid())


def stack_records(rec, n_layers):
    """rec: lr, loss lists and grads/params/ms/mom lists (over steps) of flat per-tensor lists
    [kernel_1, bias_1, kernel_2, ...]: the run dict write_run takes (layers of stacked arrays)."""
    out = {"lr": rec["lr"], "loss": rec["loss"]}
    for key in ("grads", "params", "ms", "mom"):
        per = rec[key]
        out[key] = [(np.stack([t[2 * i] for t in per]), np.stack([t[2 * i + 1] for t in per]))
                    for i in range(n_layers)]
    return out


def begin(doc, file_name, variants, extra):
    """The generators' common command line (--out, --seed, --force) and up-to-date check.
    Returns (args, path, tmp, sig), or None when the file is up to date (nothing to do)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    path, tmp = open_tmp(a.out, file_name)
    sig = signature(variants, a.seed, extra(a) if callable(extra) else extra)
    if not a.force and up_to_date(path, sig):
        print("%s: up to date; use --force to regenerate" % path)
        return None
    return a, path, tmp, sig
