"""Independent PyTorch reference for the classifier head's training step (tests/test_head_training.cpp).

Builds, from its own seed and with numpy only (teacher_forced_common.py), two cases of
Dense(in->h) ReLU Dense(h->h) ReLU Dense(h->2) with Glorot-uniform weights (biases zero) and
synthetic batches (x ~ U[0,1) plus a class-dependent shift):
  small  256 -> 64 -> 64 -> 2, batch 64, 40 steps (crosses 4 smooth lr decays / 2 staircase steps)
  full   2048 -> 512 -> 512 -> 2 (the real head), batch 128, one step with the step counter at 30
         (a staircase boundary: lr0 * 0.25), momentum-0.9 variants only (from the initial state,
         where the momentum buffer is zero, a momentum-0 step is the same step)
and trains each in float32 torch ops, dropout OFF, softmax cross-entropy with class weights
[1, 3], for four optimizer variants (all lr0 1e-3, rho 0.9):
  tf1_m0          TF1 RMSProp written by hand (ms starts at 1, eps 1e-10 inside the sqrt, lr folded
                  into the momentum), momentum 0, lr0 * 0.9^(step/10)        (smooth decay)
  tf1_m09_stair   same with momentum 0.9, lr0 * 0.5^floor(step/15)          (staircase)
  torch_m0        torch.optim.RMSprop(alpha 0.9, eps 1e-8), 0.9^(step/10)
  torch_m09_stair torch.optim.RMSprop(alpha 0.9, eps 1e-8, momentum 0.9), 0.5^floor(step/15)
(TensorFlow's own RMSPropOptimizer judges the tf1 formula in tf_rmsprop_reference.py.)
The learning rate of step s is computed in Python double and rounded to float32, as the C++ side
does. For every step it records the gradient, the loss and the state after the step (weights,
square average, momentum buffer: zeros for torch momentum 0, which keeps none), so the C++ test
can start every step from torch's state (teacher forcing; layout in teacher_forced_common.py).
Writes train_reference.h5 (~75 MB). Run: /usr/bin/python3 tests/reference/train_reference.py
--out DIR [--force]  (~20 s on 2 cores)
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import teacher_forced_common as tfc  # noqa: E402

FILE = "train_reference.h5"
VARIANTS = [
    # name, formula, lr0, rho, momentum, eps, decay_rate, decay_steps, staircase
    ("tf1_m0", "tf1", 1e-3, 0.9, 0.0, 1e-10, 0.9, 10, False),
    ("tf1_m09_stair", "tf1", 1e-3, 0.9, 0.9, 1e-10, 0.5, 15, True),
    ("torch_m0", "torch", 1e-3, 0.9, 0.0, 1e-8, 0.9, 10, False),
    ("torch_m09_stair", "torch", 1e-3, 0.9, 0.9, 1e-8, 0.5, 15, True),
]
STEP0 = {"small": 0, "full": 30}


def train(init, xs, ys, v, step0):
    name, formula, lr0, rho, mom, eps, rate, dsteps, stair = v
    params = []
    for kern, bias in init:
        params.append(torch.tensor(kern, requires_grad=True))
        params.append(torch.tensor(bias, requires_grad=True))
    cw = torch.tensor(tfc.CLASS_WEIGHTS, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=cw)
    if formula == "torch":
        opt = torch.optim.RMSprop(params, lr=lr0, alpha=rho, eps=eps, momentum=mom)
    else:
        ms = [torch.ones_like(p) for p in params]
        mo = [torch.zeros_like(p) for p in params]
    rec = {"lr": [], "loss": [], "grads": [], "params": [], "ms": [], "mom": []}
    for s in range(xs.shape[0]):
        lr = tfc.lr_at(lr0, rate, dsteps, stair, step0 + s)
        h = torch.from_numpy(xs[s])
        for i in range(0, len(params) - 2, 2):
            h = torch.relu(h @ params[i] + params[i + 1])
        z = h @ params[-2] + params[-1]
        loss = loss_fn(z, torch.from_numpy(ys[s]).long())
        for p in params:
            p.grad = None
        loss.backward()
        rec["lr"].append(lr)
        rec["loss"].append(loss.item())
        rec["grads"].append([p.grad.numpy().copy() for p in params])
        with torch.no_grad():
            if formula == "torch":
                for gr in opt.param_groups:
                    gr["lr"] = lr
                opt.step()
                st = [opt.state[p] for p in params]
                sq = [t["square_avg"].numpy().copy() for t in st]
                mb = [t["momentum_buffer"].numpy().copy() if mom > 0 else np.zeros_like(sq[j])
                      for j, t in enumerate(st)]
            else:
                for p, m2, m1 in zip(params, ms, mo):
                    g = p.grad
                    m2.add_((g * g - m2) * (1 - rho))
                    m1.copy_(mom * m1 + lr * g / torch.sqrt(m2 + eps))
                    p.sub_(m1)
                sq = [t.numpy().copy() for t in ms]
                mb = [t.numpy().copy() for t in mo]
        rec["params"].append([p.detach().numpy().copy() for p in params])
        rec["ms"].append(sq)
        rec["mom"].append(mb)
    out = tfc.stack_records(rec, len(init))
    return out


def main():
    started = tfc.begin(__doc__, FILE, VARIANTS, repr(STEP0))
    if started is None:
        return
    a, path, tmp, sig = started
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    cases = {name: tfc.make_case(name, a.seed) for name in tfc.CASES}
    with h5py.File(tmp, "w") as f:
        f.attrs["generator"] = np.bytes_("torch %s" % torch.__version__)
        tfc.write_cases(f, cases, sig)
        for v in VARIANTS:
            tfc.write_variant_attrs(f, v)
            for cname, (init, xs, ys) in cases.items():
                if cname == "full" and v[4] == 0:
                    continue  # from init a momentum-0 step equals the momentum-0.9 one
                run = train(init, xs, ys, v, STEP0[cname])
                tfc.write_run(f, v[0], cname, STEP0[cname], run)
                print("%-16s %-5s loss %.5f -> %.5f" % (v[0], cname, run["loss"][0], run["loss"][-1]))
        f.attrs["complete"] = 1
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
