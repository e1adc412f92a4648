"""PIL/PyTorch baseline for bench/bench_decode.cpp: the per-image preprocessing a torchvision-free
PyTorch pipeline does, on ONE thread, in images/s: PIL decode (Image.open + convert('RGB')),
the same with PIL's draft() (libjpeg DCT scaling, = our dct_min_side=299), and the full
decode + resize((299, 299), BILINEAR) (PIL's antialiased triangle filter, 8-bit result) + to a
float tensor in [-1, 1]; also decode + torch F.interpolate(antialias=True) on float, which is what
the engine computes. The JPEGs (600x450, 1024x1024, q90, 4:2:0) are made with PIL from the same
synthetic lesion formula as bench_decode.cpp. Run: /usr/bin/python3 bench/torch_decode.py
[--seconds 1.0] [--rounds 3]; prints the median img/s of the rounds per case.
"""
import argparse
import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def synthetic_lesion(w, h):
    """Mirrors synthetic_lesion() in bench_decode.cpp (up to float rounding)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (x - 0.5 * w) / (0.35 * w), (y - 0.5 * h) / (0.3 * h)
    edge = 1 + 0.12 * np.sin(3 * np.arctan2(v, u))
    inside = (1 / (1 + np.exp((np.sqrt(u * u + v * v) - edge) * 12)))[..., None]
    s = (0.9 + 0.1 * np.sin(x * 0.013) * np.cos(y * 0.017))[..., None]
    lesion_mod = (0.8 + 0.3 * np.sin(x * 0.05 + y * 0.03))[..., None]
    noise = ((x.astype(np.int64) * 7919 + y.astype(np.int64) * 104729) % 11 - 5)[..., None]
    p = np.array([222.0, 172.0, 150.0]) * s * (1 - inside) + \
        np.array([95.0, 58.0, 42.0]) * lesion_mod * inside + noise
    return np.clip(np.rint(p), 0, 255).astype(np.uint8)


def jpeg_of(w, h):
    b = io.BytesIO()
    Image.fromarray(synthetic_lesion(w, h)).save(b, "JPEG", quality=90)
    return b.getvalue()


def decode(data, draft):
    im = Image.open(io.BytesIO(data))
    if draft:
        im.draft("RGB", (299, 299))
    return im.convert("RGB")


def to_unit_tensor(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


CASES = {
    "decode full": lambda d: decode(d, False),
    "decode draft(299)": lambda d: decode(d, True),
    "decode+PIL resize BILINEAR+tensor": lambda d: to_unit_tensor(
        decode(d, False).resize((299, 299), Image.BILINEAR)),
    "decode draft+PIL resize+tensor": lambda d: to_unit_tensor(
        decode(d, True).resize((299, 299), Image.BILINEAR)),
    "decode+torch interpolate aa (float)": lambda d: F.interpolate(
        torch.from_numpy(np.array(decode(d, False))).permute(2, 0, 1)[None].float(),
        size=(299, 299), mode="bilinear", align_corners=False, antialias=True) / 127.5 - 1,
}


def rate(fn, data, seconds):
    fn(data)  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn(data)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("torch_decode: PIL %s, torch %s, 1 thread, median of %d rounds" %
          (Image.__version__, torch.__version__, a.rounds))
    for w, h in [(600, 450), (1024, 1024)]:
        data = jpeg_of(w, h)
        for name, fn in CASES.items():
            rs = sorted(rate(fn, data, a.seconds) for _ in range(a.rounds))
            print("%-10s %-38s %8.1f img/s  (%.1f..%.1f)  %d KiB JPEG" %
                  ("%dx%d" % (w, h), name, rs[len(rs) // 2], rs[0], rs[-1], len(data) // 1024))


if __name__ == "__main__":
    main()
