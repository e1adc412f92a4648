"""Independent PyTorch reference for the classifier head's training (tests/test_head_training.cpp).

Generates, from its own seed and with numpy only, Glorot-uniform initial weights for
Dense(2048->512) ReLU Dense(512->512) ReLU Dense(512->2) (biases zero) and 100 batches of synthetic
(x, y) (batch 128, x ~ U[0,1) plus a class-dependent shift so the loss really falls), then trains
100 steps in float32 torch ops, dropout OFF (masks cannot match across frameworks), softmax
cross-entropy with class weights [1, 3], for several optimizer variants:
  tf1_m0        TF1 RMSProp written by hand (ms starts at 1, eps 1e-10 inside the sqrt, lr folded
                into the momentum), momentum 0, lr 1e-4 * 0.9^(step/10)         (smooth decay)
  tf1_m09_stair same with momentum 0.9, lr 1e-3 * 0.5^floor(step/30)            (staircase)
  torch_m0      torch.optim.RMSprop(alpha 0.9, eps 1e-8), lr 1e-4 via exponential decay 0.9^(step/10)
  torch_m09_stair torch.optim.RMSprop(alpha 0.9, eps 1e-8, momentum 0.9), 0.5^floor(step/30)
The learning rate of step s (0-based) is computed in Python double and rounded to float32, as the
C++ side does. Writes train_reference.h5 (format_version attribute): /init/dense_k/{kernel,bias},
/x (100,128,2048) float32, /y (100,128) float32 labels, /class_weights, and per variant /<name>/losses (100)
and /<name>/dense_k/{kernel,bias} (final weights), with the hyper-parameters as attributes.
Run: /usr/bin/python3 tests/reference/train_reference.py --out DIR [--force]  (~110 s on 2 cores)
"""
import argparse
import math
import os

import h5py
import numpy as np
import torch

FORMAT_VERSION = 1
FILE = "train_reference.h5"
STEPS, BATCH, IN, H, K = 100, 128, 2048, 512, 2
CLASS_WEIGHTS = [1.0, 3.0]
VARIANTS = [
    # name, formula, lr0, rho, momentum, eps, decay_rate, decay_steps, staircase
    ("tf1_m0", "tf1", 1e-4, 0.9, 0.0, 1e-10, 0.9, 10, False),
    ("tf1_m09_stair", "tf1", 1e-3, 0.9, 0.9, 1e-10, 0.5, 30, True),
    ("torch_m0", "torch", 1e-4, 0.9, 0.0, 1e-8, 0.9, 10, False),
    ("torch_m09_stair", "torch", 1e-3, 0.9, 0.9, 1e-8, 0.5, 30, True),
]


def glorot(rng, fan_in, fan_out):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=(fan_in, fan_out)).astype(np.float32)


def lr_at(lr0, rate, steps, stair, s):
    e = s / steps
    if stair:
        e = math.floor(e)
    return float(np.float32(lr0 * rate ** e))


def train(init, xs, ys, v):
    name, formula, lr0, rho, mom, eps, rate, dsteps, stair = v
    params = []
    for k in range(3):
        params.append(torch.tensor(init[k][0], requires_grad=True))
        params.append(torch.tensor(init[k][1], requires_grad=True))
    cw = torch.tensor(CLASS_WEIGHTS, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=cw)
    if formula == "torch":
        opt = torch.optim.RMSprop(params, lr=lr0, alpha=rho, eps=eps, momentum=mom)
    else:
        ms = [torch.ones_like(p) for p in params]
        mo = [torch.zeros_like(p) for p in params]
    losses = []
    for s in range(STEPS):
        lr = lr_at(lr0, rate, dsteps, stair, s)
        x = torch.from_numpy(xs[s])
        h = torch.relu(x @ params[0] + params[1])
        h = torch.relu(h @ params[2] + params[3])
        z = h @ params[4] + params[5]
        loss = loss_fn(z, torch.from_numpy(ys[s]).long())
        for p in params:
            p.grad = None
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            if formula == "torch":
                for gr in opt.param_groups:
                    gr["lr"] = lr
                opt.step()
            else:
                for p, m2, m1 in zip(params, ms, mo):
                    g = p.grad
                    m2.add_((g * g - m2) * (1 - rho))
                    m1.copy_(mom * m1 + lr * g / torch.sqrt(m2 + eps))
                    p.sub_(m1)
    return np.array(losses, dtype=np.float32), [p.detach().numpy().copy() for p in params]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    path = os.path.join(a.out, FILE)
    if not a.force and os.path.exists(path):
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format_version") == FORMAT_VERSION and f.attrs.get("complete") == 1:
                    print("%s: up to date; use --force to regenerate" % path)
                    return
        except OSError:
            pass
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    init = [(glorot(rng, IN, H), np.zeros(H, np.float32)), (glorot(rng, H, H), np.zeros(H, np.float32)),
            (glorot(rng, H, K), np.zeros(K, np.float32))]
    ys = rng.integers(0, K, size=(STEPS, BATCH)).astype(np.int32)
    xs = rng.uniform(0, 1, size=(STEPS, BATCH, IN)).astype(np.float32)
    # Class-dependent signal in the first 64 features so training has something to learn.
    xs[:, :, :64] += (0.5 * ys[:, :, None]).astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["steps"], f.attrs["batch"] = STEPS, BATCH
        f.create_dataset("x", data=xs)
        f.create_dataset("y", data=ys.astype(np.float32))  # float32: the C++ reader's type
        f.create_dataset("class_weights", data=np.array(CLASS_WEIGHTS, np.float32))
        for k in range(3):
            f.create_dataset("init/dense_%d/kernel" % (k + 1), data=init[k][0])
            f.create_dataset("init/dense_%d/bias" % (k + 1), data=init[k][1])
        for v in VARIANTS:
            losses, params = train(init, xs, ys, v)
            g = f.create_group(v[0])
            for key, val in zip(["formula", "lr", "rho", "momentum", "eps", "decay_rate",
                                 "decay_steps", "staircase"], v[1:]):
                g.attrs[key] = np.string_(val) if isinstance(val, str) else val
            g.attrs["staircase"] = int(v[8])
            g.create_dataset("losses", data=losses)
            for k in range(3):
                g.create_dataset("dense_%d/kernel" % (k + 1), data=params[2 * k])
                g.create_dataset("dense_%d/bias" % (k + 1), data=params[2 * k + 1])
            print("%-16s loss %.5f -> %.5f" % (v[0], losses[0], losses[-1]))
        f.attrs["complete"] = 1
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
