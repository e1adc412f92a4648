"""Independent PyTorch reference for Inception v3 with KERAS semantics (no engine code used).

What it is: a from-scratch torch rebuild of keras-applications' InceptionV3 (see
docs/ARCHITECTURE.md): conv (no bias) -> BN inference (y = (x-mean)/sqrt(var+1e-3) + beta, no
gamma) -> ReLU, TF 'same' padding (pad_before = total//2, the rest after), 3x3 s1 'same' average
pools that exclude padding from the divisor, 3x3 s2 'valid' max pools, Keras concat order, global
average pool -> N x 2048 bottleneck, optional `predictions` Dense(2048->1000)+softmax. Weights are
kept in Keras layout: conv kernels (kh,kw,cin,cout) numpy float32 keyed by creation index 1..94
(C# of docs/ARCHITECTURE.md). Pieces:
  * `load_keras_h5(path)`     reads a Keras HDF5 weight file (root or /model_weights, layer_names or
                              layer_names0.., 0- or 1-based names), checks every shape/dtype/value.
  * `forward(x_nhwc, taps=None, weights=..., dtype=torch.float64)`  the unfolded Keras-semantics
                              forward (BN applied explicitly); returns the bottleneck (+ block taps).
  * `KerasInceptionV3(weights)` an nn.Module (NCHW input) with BN folded into conv weight+bias, i.e.
                              a plain conv+bias+relu net for benchmarking; channels_last, jit.script,
                              jit.trace and jit.freeze all work.
  * `conv_flops()`            exact 2*kh*kw*cin*cout*ho*wo sum over the 94 convs.
Run only with /usr/bin/python3 (Debian python3-torch). Used by tests/reference/make_reference.py and
bench/torch_inception_cpu.py; `/usr/bin/python3 tests/reference/torch_inception.py WEIGHTS.h5` runs
a quick self-check (module vs functional forward) on a weight file.
"""
import math
import re
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
NUM_CONVS = 94
BLOCK_NAMES = ["stem"] + ["mixed%d" % i for i in range(11)]


# ----------------------------------------------------------------------------------------------
# TF padding / pooling primitives on NCHW tensors (generic: also used for the single-op cases)
# ----------------------------------------------------------------------------------------------
def tf_same_pads(n, k, s):
    """TF 'same': (pad_before, pad_after) for one spatial dim of size n, kernel k, stride s."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _pads(x, kh, kw, s, padding):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding != "same":
        raise ValueError("padding must be 'same' or 'valid', got %r" % (padding,))
    pt, pb = tf_same_pads(x.shape[2], kh, s)
    pl, pr = tf_same_pads(x.shape[3], kw, s)
    return (pl, pr, pt, pb)  # F.pad order: W then H


def conv2d_tf(x, w_oihw, stride, padding, bias=None):
    kh, kw = w_oihw.shape[2], w_oihw.shape[3]
    pl, pr, pt, pb = _pads(x, kh, kw, stride, padding)
    if pl == pr and pt == pb:
        return F.conv2d(x, w_oihw, bias, stride, (pt, pl))
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w_oihw, bias, stride)


def bn_relu(y, beta, mean, var):
    """Keras BatchNormalization(scale=False, eps=1e-3) inference, then ReLU; params (C,)."""
    sh = (1, -1, 1, 1)
    return torch.relu((y - mean.view(sh)) / torch.sqrt(var.view(sh) + BN_EPS) + beta.view(sh))


def max_pool_tf(x, k, s, padding):
    pads = _pads(x, k, k, s, padding)
    if any(pads):
        x = F.pad(x, pads, value=-math.inf)  # TF max pool ignores padded cells
    return F.max_pool2d(x, k, s)


def avg_pool_tf(x, k, s, padding):
    """TF average pool: the divisor counts only valid (non-padded) input cells."""
    pads = _pads(x, k, k, s, padding)
    if not any(pads):
        return F.avg_pool2d(x, k, s)
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    return F.avg_pool2d(F.pad(x, pads), k, s) / F.avg_pool2d(F.pad(ones, pads), k, s)


# ----------------------------------------------------------------------------------------------
# The architecture, written once against an abstract `ops` object (shapes, layer graph, forward)
# ----------------------------------------------------------------------------------------------
def topology(ops, x):
    """Keras InceptionV3 body in creation order. ops.conv(x, idx, cout, kh, kw, stride, padding),
    ops.maxpool(x), ops.avgpool(x) (3x3 s1 same), ops.concat(list, name or None), ops.tap(name, x).
    Python evaluates arguments left to right, so every op is created in Keras' order."""
    conv = ops.conv
    x = conv(x, 1, 32, 3, 3, 2, "valid")
    x = conv(x, 2, 32, 3, 3, 1, "valid")
    x = conv(x, 3, 64, 3, 3, 1, "same")
    x = ops.maxpool(x)
    x = conv(x, 4, 80, 1, 1, 1, "valid")
    x = conv(x, 5, 192, 3, 3, 1, "valid")
    x = ops.maxpool(x)
    x = ops.tap("stem", x)
    i = 6
    for m, pf in enumerate((32, 64, 64)):  # mixed0..2
        b1 = conv(x, i, 64, 1, 1, 1, "same")
        b5 = conv(conv(x, i + 1, 48, 1, 1, 1, "same"), i + 2, 64, 5, 5, 1, "same")
        b3 = conv(x, i + 3, 64, 1, 1, 1, "same")
        b3 = conv(b3, i + 4, 96, 3, 3, 1, "same")
        b3 = conv(b3, i + 5, 96, 3, 3, 1, "same")
        bp = conv(ops.avgpool(x), i + 6, pf, 1, 1, 1, "same")
        x = ops.tap("mixed%d" % m, ops.concat([b1, b5, b3, bp], "mixed%d" % m))
        i += 7
    # mixed3 (C27..C30)
    b3 = conv(x, 27, 384, 3, 3, 2, "valid")
    bd = conv(x, 28, 64, 1, 1, 1, "same")
    bd = conv(bd, 29, 96, 3, 3, 1, "same")
    bd = conv(bd, 30, 96, 3, 3, 2, "valid")
    bp = ops.maxpool(x)
    x = ops.tap("mixed3", ops.concat([b3, bd, bp], "mixed3"))
    i = 31
    for m, c in zip(range(4, 8), (128, 160, 160, 192)):  # mixed4..7
        b1 = conv(x, i, 192, 1, 1, 1, "same")
        b7 = conv(x, i + 1, c, 1, 1, 1, "same")
        b7 = conv(b7, i + 2, c, 1, 7, 1, "same")
        b7 = conv(b7, i + 3, 192, 7, 1, 1, "same")
        bd = conv(x, i + 4, c, 1, 1, 1, "same")
        bd = conv(bd, i + 5, c, 7, 1, 1, "same")
        bd = conv(bd, i + 6, c, 1, 7, 1, "same")
        bd = conv(bd, i + 7, c, 7, 1, 1, "same")
        bd = conv(bd, i + 8, 192, 1, 7, 1, "same")
        bp = conv(ops.avgpool(x), i + 9, 192, 1, 1, 1, "same")
        x = ops.tap("mixed%d" % m, ops.concat([b1, b7, bd, bp], "mixed%d" % m))
        i += 10
    # mixed8 (C71..C76)
    b3 = conv(x, 71, 192, 1, 1, 1, "same")
    b3 = conv(b3, 72, 320, 3, 3, 2, "valid")
    b7 = conv(x, 73, 192, 1, 1, 1, "same")
    b7 = conv(b7, 74, 192, 1, 7, 1, "same")
    b7 = conv(b7, 75, 192, 7, 1, 1, "same")
    b7 = conv(b7, 76, 192, 3, 3, 2, "valid")
    bp = ops.maxpool(x)
    x = ops.tap("mixed8", ops.concat([b3, b7, bp], "mixed8"))
    for m, i in ((9, 77), (10, 86)):  # mixed9, mixed10
        b1 = conv(x, i, 320, 1, 1, 1, "same")
        b3 = conv(x, i + 1, 384, 1, 1, 1, "same")
        b3 = ops.concat([conv(b3, i + 2, 384, 1, 3, 1, "same"), conv(b3, i + 3, 384, 3, 1, 1, "same")],
                        "mixed9_%d" % (m - 9))  # Keras names both 'mixed9_' + str(i)
        bd = conv(x, i + 4, 448, 1, 1, 1, "same")
        bd = conv(bd, i + 5, 384, 3, 3, 1, "same")
        bd = ops.concat([conv(bd, i + 6, 384, 1, 3, 1, "same"), conv(bd, i + 7, 384, 3, 1, 1, "same")],
                        None)  # unnamed Keras concatenate -> concatenate_k
        bp = conv(ops.avgpool(x), i + 8, 192, 1, 1, 1, "same")
        x = ops.tap("mixed%d" % m, ops.concat([b1, b3, bd, bp], "mixed%d" % m))
    return x


class _ShapeOps:
    """Symbolic walk over (C, H, W): conv specs, output shapes and FLOPs."""

    def __init__(self):
        self.specs = {}  # idx -> dict(cin, cout, kh, kw, stride, padding, in_hw, out_hw)
        self.shapes = {}
        self.flops = 0

    def conv(self, x, idx, cout, kh, kw, s, p):
        c, h, w = x
        if p == "same":
            ho, wo = -(-h // s), -(-w // s)
        else:
            ho, wo = (h - kh) // s + 1, (w - kw) // s + 1
        self.specs[idx] = dict(cin=c, cout=cout, kh=kh, kw=kw, stride=s, padding=p,
                               in_hw=(h, w), out_hw=(ho, wo))
        self.flops += 2 * kh * kw * c * cout * ho * wo
        return (cout, ho, wo)

    def maxpool(self, x):
        c, h, w = x
        return (c, (h - 3) // 2 + 1, (w - 3) // 2 + 1)

    def avgpool(self, x):
        return x

    def concat(self, xs, name):
        return (sum(t[0] for t in xs), xs[0][1], xs[0][2])

    def tap(self, name, x):
        self.shapes[name] = x
        return x


def _walk_shapes(h=299, w=299):
    ops = _ShapeOps()
    topology(ops, (3, h, w))
    return ops


_SHAPES = _walk_shapes()
CONV_SPECS = _SHAPES.specs          # idx -> spec dict at 299x299
BLOCK_SHAPES_CHW = _SHAPES.shapes   # block name -> (C, H, W) at 299x299
assert len(CONV_SPECS) == NUM_CONVS and sorted(CONV_SPECS) == list(range(1, NUM_CONVS + 1))


def conv_flops(h=299, w=299):
    """Exact sum of 2*kh*kw*cin*cout*ho*wo over the 94 convs for one h x w image."""
    return _walk_shapes(h, w).flops


def kernel_shape(idx):
    s = CONV_SPECS[idx]
    return (s["kh"], s["kw"], s["cin"], s["cout"])


def param_count(include_top=True):
    n = 0
    for i in range(1, NUM_CONVS + 1):
        n += int(np.prod(kernel_shape(i))) + 3 * CONV_SPECS[i]["cout"]
    return n + (2048 * 1000 + 1000 if include_top else 0)


assert param_count(False) == 21802784 and param_count(True) == 23851784  # notop / with top


# ----------------------------------------------------------------------------------------------
# Keras HDF5 loader
# ----------------------------------------------------------------------------------------------
def _attr_strings(v):
    return [s.decode("utf8") if isinstance(s, (bytes, np.bytes_)) else str(s)
            for s in np.asarray(v).reshape(-1)]


def _read_name_list(g, name):
    if name in g.attrs:
        return _attr_strings(g.attrs[name])
    out, k = [], 0
    while "%s%d" % (name, k) in g.attrs:
        out += _attr_strings(g.attrs["%s%d" % (name, k)])
        k += 1
    if k == 0:
        raise ValueError("no '%s' attribute (nor %s0, %s1, ...)" % (name, name, name))
    return out


def load_keras_h5(path, strict=True):
    """Read a Keras-layout InceptionV3 weight file. Returns a dict:
    {'conv': {idx: (kh,kw,cin,cout) f32}, 'bn': {idx: (beta, mean, var) f32}, 'dense': (kernel
    (2048,1000), bias (1000,)) or None, 'zero_based': bool, 'layer_names': [...]}
    Raises ValueError (bad content) or OSError (not a readable HDF5 file) with a message."""
    with h5py.File(path, "r") as f:
        g = f
        if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
            g = f["model_weights"]
        try:
            names = _read_name_list(g, "layer_names")
        except ValueError as e:
            raise ValueError("%s: %s" % (path, e))
        zero_based = "conv2d" in names or "batch_normalization" in names
        out = {"conv": {}, "bn": {}, "dense": None, "zero_based": zero_based, "layer_names": names}

        def weights_of(lname):
            if lname not in g:
                raise ValueError("%s: layer '%s' is listed in layer_names but has no group" % (path, lname))
            lg = g[lname]
            wn = _attr_strings(lg.attrs["weight_names"]) if "weight_names" in lg.attrs else []
            res = {}
            for wname in wn:
                if wname not in lg:
                    raise ValueError("%s: layer '%s': weight '%s' listed in weight_names is missing"
                                     % (path, lname, wname))
                ds = lg[wname]
                if strict and ds.dtype != np.float32:
                    raise ValueError("%s: %s/%s: expected float32, found %s" % (path, lname, wname, ds.dtype))
                arr = np.asarray(ds[()], dtype=np.float32)
                if strict and not np.all(np.isfinite(arr)):
                    raise ValueError("%s: %s/%s: non-finite value" % (path, lname, wname))
                res[wname.split("/")[-1]] = arr
            return res

        def expect(lname, key, arr, shape):
            if tuple(arr.shape) != tuple(shape):
                raise ValueError("%s: %s/%s: expected shape %s, found %s"
                                 % (path, lname, key, tuple(shape), tuple(arr.shape)))

        for lname in names:
            m = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", lname)
            if m:
                n = int(m.group(2)) if m.group(2) else 0
                idx = n + 1 if zero_based else n
                if not (1 <= idx <= NUM_CONVS):
                    raise ValueError("%s: layer '%s' maps to C%d, outside 1..94" % (path, lname, idx))
                w = weights_of(lname)
                cout = CONV_SPECS[idx]["cout"]
                if m.group(1) == "conv2d":
                    if set(w) != {"kernel:0"}:
                        raise ValueError("%s: %s: expected only kernel:0, found %s" % (path, lname, sorted(w)))
                    expect(lname, "kernel:0", w["kernel:0"], kernel_shape(idx))
                    out["conv"][idx] = w["kernel:0"]
                else:
                    for key in ("beta:0", "moving_mean:0", "moving_variance:0"):
                        if key not in w:
                            raise ValueError("%s: %s: missing %s" % (path, lname, key))
                        expect(lname, key, w[key], (cout,))
                    if strict and np.any(w["moving_variance:0"] < 0):
                        raise ValueError("%s: %s: negative moving_variance" % (path, lname))
                    out["bn"][idx] = (w["beta:0"], w["moving_mean:0"], w["moving_variance:0"])
            elif lname == "predictions":
                w = weights_of(lname)
                if "kernel:0" not in w or "bias:0" not in w:
                    raise ValueError("%s: predictions: needs kernel:0 and bias:0" % path)
                expect(lname, "kernel:0", w["kernel:0"], (2048, 1000))
                expect(lname, "bias:0", w["bias:0"], (1000,))
                out["dense"] = (w["kernel:0"], w["bias:0"])
        for kind in ("conv", "bn"):
            missing = sorted(set(range(1, NUM_CONVS + 1)) - set(out[kind]))
            if missing:
                raise ValueError("%s: missing %s layer(s) for C%s" % (path, kind, missing))
    return out


# ----------------------------------------------------------------------------------------------
# Unfolded Keras-semantics forward (reference numerics)
# ----------------------------------------------------------------------------------------------
class _EagerOps:
    def __init__(self, weights, dtype, device="cpu", on_conv=None, taps=None):
        self.w, self.dtype, self.device, self.on_conv = weights, dtype, device, on_conv
        self.taps = taps

    def t(self, a):
        return torch.as_tensor(np.asarray(a), device=self.device).to(self.dtype)

    def conv(self, x, idx, cout, kh, kw, s, p):
        k = self.t(self.w["conv"][idx]).permute(3, 2, 0, 1).contiguous()
        y = conv2d_tf(x, k, s, p)
        if self.on_conv is not None:
            self.on_conv(idx, y)  # may (re)write self.w['bn'][idx] before BN is applied
        beta, mean, var = (self.t(a) for a in self.w["bn"][idx])
        return bn_relu(y, beta, mean, var)

    def maxpool(self, x):
        return F.max_pool2d(x, 3, 2)

    def avgpool(self, x):
        return avg_pool_tf(x, 3, 1, "same")

    def concat(self, xs, name):
        return torch.cat(xs, 1)

    def tap(self, name, x):
        if self.taps is not None:
            self.taps[name] = x
        return x


def forward(x, taps=None, weights=None, dtype=torch.float64, on_conv=None):
    """Keras-semantics forward with BN applied explicitly (not folded).
    x: NHWC numpy array or tensor (N,299,299,3). weights: dict from load_keras_h5.
    taps=None -> returns the bottleneck (N,2048). taps=True -> returns (bottleneck, dict) with NHWC
    'stem', 'mixed0'..'mixed10', 'bottleneck' and, when weights has a top, 'predictions'. A dict
    passed as taps is filled in place and also returned. Outputs are numpy arrays (in `dtype`) if x
    was numpy, tensors otherwise. on_conv(idx, conv_output_nchw) is a hook used for calibration."""
    if weights is None:
        raise ValueError("forward() needs weights= (a dict from load_keras_h5)")
    is_np = isinstance(x, np.ndarray)
    xt = torch.as_tensor(x).to(dtype).permute(0, 3, 1, 2)
    store = {}
    with torch.no_grad():
        y = topology(_EagerOps(weights, dtype, xt.device, on_conv, store), xt)
        bott = y.mean(dim=(2, 3))
        res = {k: v.permute(0, 2, 3, 1) for k, v in store.items()}
        res["bottleneck"] = bott
        if weights.get("dense") is not None:
            k, b = weights["dense"]
            logits = bott @ torch.as_tensor(k).to(dtype) + torch.as_tensor(b).to(dtype)
            res["predictions"] = torch.softmax(logits, dim=1)
    if is_np:
        res = {k: v.contiguous().numpy() for k, v in res.items()}
    if taps is None or taps is False:
        return res["bottleneck"]
    if isinstance(taps, dict):
        taps.update(res)
        return res["bottleneck"], taps
    return res["bottleneck"], res


# ----------------------------------------------------------------------------------------------
# Folded nn.Module for benchmarking (conv+bias+relu), scriptable/traceable/freezable
# ----------------------------------------------------------------------------------------------
class ConvReLU(nn.Module):
    def __init__(self, idx, weights, dtype):
        super().__init__()
        s = CONV_SPECS[idx]
        kh, kw, cin, cout = kernel_shape(idx)
        beta, mean, var = (np.asarray(a, np.float64) for a in weights["bn"][idx])
        inv = 1.0 / np.sqrt(var + BN_EPS)
        wk = np.asarray(weights["conv"][idx], np.float64).transpose(3, 2, 0, 1) * inv[:, None, None, None]
        b = beta - mean * inv
        self.stride = int(s["stride"])
        self.kh, self.kw = kh, kw
        # stride-1 'same' with odd kernels is symmetric -> built-in padding; stride>1 'same'
        # (not used by InceptionV3) pads dynamically, TF style.
        self.dynamic_pad = bool(s["padding"] == "same" and self.stride > 1)
        pad = ((kh - 1) // 2, (kw - 1) // 2) if (s["padding"] == "same" and not self.dynamic_pad) else (0, 0)
        self.conv = nn.Conv2d(cin, cout, (kh, kw), self.stride, pad, bias=True, dtype=dtype)
        with torch.no_grad():  # folded in float64, rounded once to dtype
            self.conv.weight.copy_(torch.from_numpy(wk))
            self.conv.bias.copy_(torch.from_numpy(b))

    def forward(self, x):
        if self.dynamic_pad:
            h, w = x.shape[2], x.shape[3]
            th = max((-(-h // self.stride) - 1) * self.stride + self.kh - h, 0)
            tw = max((-(-w // self.stride) - 1) * self.stride + self.kw - w, 0)
            x = F.pad(x, [tw // 2, tw - tw // 2, th // 2, th - th // 2])
        return torch.relu(self.conv(x))


def _units(weights, dtype, lo, n):
    return [ConvReLU(i, weights, dtype) for i in range(lo, lo + n)]


class _Stem(nn.Module):
    def __init__(self, u):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3, self.c4 = u

    def forward(self, x):
        x = F.max_pool2d(self.c2(self.c1(self.c0(x))), 3, 2)
        return F.max_pool2d(self.c4(self.c3(x)), 3, 2)


class _BlockA(nn.Module):  # mixed0..2
    def __init__(self, u):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3, self.c4, self.c5, self.c6 = u

    def forward(self, x):
        b1 = self.c0(x)
        b5 = self.c2(self.c1(x))
        b3 = self.c5(self.c4(self.c3(x)))
        bp = self.c6(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class _BlockB(nn.Module):  # mixed3
    def __init__(self, u):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3 = u

    def forward(self, x):
        b3 = self.c0(x)
        bd = self.c3(self.c2(self.c1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, 2)], 1)


class _BlockC(nn.Module):  # mixed4..7
    def __init__(self, u):
        super().__init__()
        (self.c0, self.c1, self.c2, self.c3, self.c4, self.c5, self.c6, self.c7, self.c8,
         self.c9) = u

    def forward(self, x):
        b1 = self.c0(x)
        b7 = self.c3(self.c2(self.c1(x)))
        bd = self.c8(self.c7(self.c6(self.c5(self.c4(x)))))
        bp = self.c9(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _BlockD(nn.Module):  # mixed8
    def __init__(self, u):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3, self.c4, self.c5 = u

    def forward(self, x):
        b3 = self.c1(self.c0(x))
        b7 = self.c5(self.c4(self.c3(self.c2(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class _BlockE(nn.Module):  # mixed9, mixed10
    def __init__(self, u):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3, self.c4, self.c5, self.c6, self.c7, self.c8 = u

    def forward(self, x):
        b1 = self.c0(x)
        b3 = self.c1(x)
        b3 = torch.cat([self.c2(b3), self.c3(b3)], 1)
        bd = self.c5(self.c4(x))
        bd = torch.cat([self.c6(bd), self.c7(bd)], 1)
        bp = self.c8(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([b1, b3, bd, bp], 1)


class KerasInceptionV3(nn.Module):
    """InceptionV3 with Keras semantics, BN folded (w' = w/sqrt(var+eps), b' = beta - mean/sqrt(..),
    computed in float64, then cast to `dtype`). forward(x: N,3,H,W) -> bottleneck (N,2048), or the
    softmax predictions (N,1000) when include_top (default: if the weights have a top).
    `blocks` is a Sequential of stem, mixed0..mixed10 (use forward_taps for NCHW block outputs)."""

    def __init__(self, weights, include_top=None, dtype=torch.float32):
        super().__init__()
        if include_top is None:
            include_top = weights.get("dense") is not None
        w = weights
        blocks = [_Stem(_units(w, dtype, 1, 5))]
        blocks += [_BlockA(_units(w, dtype, i, 7)) for i in (6, 13, 20)]
        blocks += [_BlockB(_units(w, dtype, 27, 4))]
        blocks += [_BlockC(_units(w, dtype, i, 10)) for i in (31, 41, 51, 61)]
        blocks += [_BlockD(_units(w, dtype, 71, 6))]
        blocks += [_BlockE(_units(w, dtype, i, 9)) for i in (77, 86)]
        self.blocks = nn.Sequential(*blocks)
        self.include_top = bool(include_top)
        self.fc = nn.Linear(2048, 1000, dtype=dtype)
        if self.include_top:
            k, b = weights["dense"]
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(np.asarray(k, np.float64).T))
                self.fc.bias.copy_(torch.from_numpy(np.asarray(b, np.float64)))
        self.eval()

    def forward(self, x):
        x = self.blocks(x).mean(dim=(2, 3))
        if self.include_top:
            x = torch.softmax(self.fc(x), dim=1)
        return x

    @torch.jit.ignore
    def forward_taps(self, x):
        taps = {}
        for name, b in zip(BLOCK_NAMES, self.blocks):
            x = b(x)
            taps[name] = x
        taps["bottleneck"] = x.mean(dim=(2, 3))
        if self.include_top:
            taps["predictions"] = torch.softmax(self.fc(taps["bottleneck"]), dim=1)
        return taps


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 torch_inception.py WEIGHTS.h5")
    torch.set_num_threads(2)
    W = load_keras_h5(sys.argv[1])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    ref = forward(x, weights=W, dtype=torch.float64)
    m = KerasInceptionV3(W, include_top=False, dtype=torch.float64)
    with torch.no_grad():
        got = m(torch.from_numpy(x).permute(0, 3, 1, 2).double()).numpy()
    print("conv GFLOP/image %.4f, max |module - functional| (float64) %.3g"
          % (conv_flops() / 1e9, np.abs(got - ref).max()))
