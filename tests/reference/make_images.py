"""Writes the image-decoding and resize reference data for tests/test_image_io.cpp.

Into --out DIR: DIR/images/ (test images written with PIL, plus hand-made bad files and
DIR/images/manifest.tsv: `<file>\t<ok | error substring>\t<what it is>`) and
DIR/image_reference.h5 (h5py):
  root attrs: format_version, script_sha256, pil_version, torch_version, generator
  /decoded/<file>   (H, W, 3) uint8: PIL 9.4 Image.open -> ImageOps.exif_transpose ->
                    .convert('RGB') of every `ok` file
  /expected/<file>  (H, W, 3) uint8, attr `why`: only where the engine deliberately differs from
                    PIL (16-bit grayscale PNG: high byte instead of PIL's clip at 255)
  /draft/<file>     (H, W, 3) uint8, attrs scale: PIL's draft() (libjpeg DCT scaling 1/scale)
  /resize/<case>    (out_h, out_w, 3) float32, attrs source, filter ('bilinear'|'antialias'),
                    out_h, out_w: torch.nn.functional.interpolate of the /decoded array in float64
                    (NCHW, align_corners=False, antialias False|True), then / 127.5 - 1.
The images are smooth synthetic "lesions" (skin-coloured background, dark irregular blob, hairs)
so JPEG round trips behave like dermoscopy photos, not like noise.
Run: /usr/bin/python3 tests/reference/make_images.py --out DIR [--force] (~5 s). Files are built in
DIR/images.tmp-<pid> and renamed; image_reference.h5 is written last (temporary name + rename), so
its presence with the current format_version and this script's SHA-256 marks a complete DIR and a
rerun does nothing.
"""
import argparse
import hashlib
import io
import os
import shutil
import struct
import sys
import warnings
import zlib

import h5py
import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

FORMAT_VERSION = 1
H5_NAME = "image_reference.h5"
RESIZE_SIZES = [(299, 299)]


def script_sha():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Synthetic content
# ----------------------------------------------------------------------------------------------
def smooth_noise(rng, h, w, cells, channels=1):
    """Low-frequency noise in [0, 1]: a cells x cells grid upsampled bicubically."""
    out = []
    for _ in range(channels):
        g = (rng.random((cells, cells)) * 255).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC), np.float64) / 255)
    return np.stack(out, -1)


def lesion_image(h, w, seed):
    """(h, w, 3) uint8: skin background, a dark irregular lesion with variegation, a few hairs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    skin = np.array([222.0, 172.0, 150.0]) * (0.85 + 0.25 * smooth_noise(rng, h, w, 6, 3))
    cy, cx = h * (0.45 + 0.1 * rng.random()), w * (0.45 + 0.1 * rng.random())
    ang = np.arctan2(yy - cy, xx - cx)
    r = np.hypot((yy - cy) / (0.32 * h), (xx - cx) / (0.36 * w))
    wobble = (1 + 0.12 * np.sin(3 * ang + rng.random() * 6)
              + 0.07 * np.sin(7 * ang + rng.random() * 6))
    inside = 1 / (1 + np.exp((r - wobble) * 18))  # soft border
    brown = np.array([95.0, 58.0, 42.0]) * (0.6 + 0.8 * smooth_noise(rng, h, w, 10, 3))
    img = skin * (1 - inside[..., None]) + brown * inside[..., None]
    for _ in range(4):  # hairs: dark quadratic curves, anti-aliased by distance
        x0, x1 = rng.random(2) * w
        bend = (rng.random() - 0.5) * 0.3 * w
        t = yy / max(h - 1, 1)
        xc = x0 + (x1 - x0) * t + bend * 4 * t * (1 - t)
        d = np.abs(xx - xc)
        a = np.clip(1.5 - d, 0, 1)[..., None] * 0.8
        img = img * (1 - a) + np.array([40.0, 30.0, 25.0]) * a
    img += rng.normal(0, 2.0, img.shape)  # skin texture
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Hand-made files
# ----------------------------------------------------------------------------------------------
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_manual(path, arr, bit_depth, color_type, interlace=False):
    """Minimal PNG writer (filter 0): for what PIL cannot write (16-bit RGB, Adam7)."""
    h, w = arr.shape[:2]
    dt = ">u2" if bit_depth == 16 else "u1"
    a = arr.astype(dt).reshape(h, w, -1)
    if not interlace:
        raw = b"".join(b"\0" + a[y].tobytes() for y in range(h))
    else:
        raw = b""
        for xs, ys, xst, yst in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                                 (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            sub = a[ys::yst, xs::xst]
            if sub.shape[0] and sub.shape[1]:
                raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
                png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def exif_blob(orientation, big_endian, ifd_offset=8, count=1):
    """APP1 payload "Exif\\0\\0" + TIFF header + IFD0 with one Orientation (SHORT) entry."""
    e = ">" if big_endian else "<"
    tiff = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(e + "I", ifd_offset)
    tiff += struct.pack(e + "H", count)
    tiff += struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    tiff += struct.pack(e + "I", 0)
    return b"Exif\0\0" + tiff


def jpeg_bytes(arr, **kw):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "JPEG", **kw)
    return b.getvalue()


def set_jpeg_sof_size(data, w, h):
    """Rewrites the SOF0 height/width fields (a 'decompression bomb' header)."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def set_png_ihdr_size(data, w, h):
    ihdr = data[16:29]
    new = struct.pack(">II", w, h) + ihdr[8:]
    return data[:16] + new + struct.pack(">I", zlib.crc32(b"IHDR" + new)) + data[33:]


def corrupt_jpeg(data, rng):
    """Overwrites 400 bytes in the middle of the entropy-coded data (no 0xFF, so no markers)."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", data[sos + 2:sos + 4])[0]
    mid = (start + len(data)) // 2
    junk = bytes(rng.integers(0, 255, 400, dtype=np.uint8))
    return data[:mid] + junk + data[mid + 400:]


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------
def build_images(d):
    """Writes every file into d; returns the manifest rows (file, expect, what)."""
    rows = []

    def ok(name, what):
        rows.append((name, "ok", what))

    def bad(name, expect, what):
        rows.append((name, expect, what))

    base = lesion_image(450, 600, 1)
    Image.fromarray(base).save(os.path.join(d, "jpeg_baseline_600x450.jpg"), quality=90)
    ok("jpeg_baseline_600x450.jpg", "baseline JPEG q90 4:2:0")
    Image.fromarray(base).save(os.path.join(d, "jpeg_progressive_600x450.jpg"), quality=90,
                               progressive=True)
    ok("jpeg_progressive_600x450.jpg", "progressive JPEG q90")
    Image.fromarray(base).save(os.path.join(d, "jpeg_444_600x450.jpg"), quality=90, subsampling=0)
    ok("jpeg_444_600x450.jpg", "JPEG q90 4:4:4")
    Image.fromarray(base).save(os.path.join(d, "jpeg_422_600x450.jpg"), quality=90, subsampling=1)
    ok("jpeg_422_600x450.jpg", "JPEG q90 4:2:2")
    Image.fromarray(base).convert("L").save(os.path.join(d, "jpeg_gray_600x450.jpg"), quality=90)
    ok("jpeg_gray_600x450.jpg", "grayscale JPEG")
    # CMYK with real K variation (PIL's RGB->CMYK would leave K = 0).
    f = base.astype(np.float64) / 255
    k = 1 - f.max(-1)
    cmy = (1 - f - k[..., None]) / np.maximum(1 - k[..., None], 1e-6)
    cmyk = np.clip(np.rint(np.concatenate([cmy, k[..., None]], -1) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(os.path.join(d, "jpeg_cmyk_600x450.jpg"), quality=90)
    ok("jpeg_cmyk_600x450.jpg", "CMYK JPEG (Adobe marker, inverted), varied K")
    big = lesion_image(1024, 1024, 2)
    Image.fromarray(big).save(os.path.join(d, "jpeg_1024x1024.jpg"), quality=90)
    ok("jpeg_1024x1024.jpg", "1024x1024 JPEG q90 4:2:0 (DCT scaling 1/2 with min side 299)")
    small = lesion_image(23, 37, 3)
    Image.fromarray(small).save(os.path.join(d, "jpeg_odd_37x23.jpg"), quality=90)
    ok("jpeg_odd_37x23.jpg", "small odd-sized JPEG (resize up-sampling)")

    for o in (3, 6, 8):  # PIL's own EXIF writer: little-endian
        ex = Image.Exif()
        ex[0x0112] = o
        Image.fromarray(base).save(os.path.join(d, "jpeg_exif%d_600x450.jpg" % o), quality=90,
                                   exif=ex.tobytes())
        ok("jpeg_exif%d_600x450.jpg" % o, "EXIF orientation %d (II byte order)" % o)
    mid = lesion_image(200, 300, 4)
    for o in (2, 4, 5, 7):  # hand-made big-endian EXIF
        Image.fromarray(mid).save(os.path.join(d, "jpeg_exif%d_mm_300x200.jpg" % o), quality=90,
                                  exif=exif_blob(o, True))
        ok("jpeg_exif%d_mm_300x200.jpg" % o, "EXIF orientation %d (MM byte order)" % o)
    Image.fromarray(mid).save(os.path.join(d, "jpeg_exif_malformed.jpg"), quality=90,
                              exif=exif_blob(6, False, ifd_offset=0xFFF0))
    ok("jpeg_exif_malformed.jpg", "EXIF IFD0 offset past the end: orientation ignored")
    Image.fromarray(mid).save(os.path.join(d, "jpeg_exif_badcount.jpg"), quality=90,
                              exif=exif_blob(6, False, count=0xFFFF))
    ok("jpeg_exif_badcount.jpg", "EXIF IFD0 entry count 65535 (the one real entry is read)")

    Image.fromarray(base).save(os.path.join(d, "png_rgb8_600x450.png"))
    ok("png_rgb8_600x450.png", "PNG RGB 8-bit")
    rgb16 = mid.astype(np.uint16) * 257 + np.random.default_rng(5).integers(0, 257, mid.shape)
    write_png_manual(os.path.join(d, "png_rgb16_300x200.png"), rgb16, 16, 2)
    ok("png_rgb16_300x200.png", "PNG RGB 16-bit (hand-written)")
    write_png_manual(os.path.join(d, "png_interlaced_300x200.png"), mid, 8, 2, interlace=True)
    ok("png_interlaced_300x200.png", "PNG RGB 8-bit Adam7 interlaced (hand-written)")
    Image.fromarray(mid).convert("L").save(os.path.join(d, "png_gray8_300x200.png"))
    ok("png_gray8_300x200.png", "PNG gray 8-bit")
    g16 = (mid.astype(np.float64).mean(-1) * 257).astype(np.uint16)
    Image.fromarray(g16, "I;16").save(os.path.join(d, "png_gray16_300x200.png"))
    ok("png_gray16_300x200.png", "PNG gray 16-bit (engine: high byte; PIL clips at 255)")
    Image.fromarray(mid).convert("L").convert("1").save(os.path.join(d, "png_gray1_300x200.png"))
    ok("png_gray1_300x200.png", "PNG 1-bit gray")
    pal = Image.fromarray(mid).convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.save(os.path.join(d, "png_palette_trns_300x200.png"), transparency=0)
    ok("png_palette_trns_300x200.png", "PNG palette with tRNS (alpha dropped)")
    alpha = (np.linspace(0, 255, 300)[None, :] * np.ones((200, 1))).astype(np.uint8)
    Image.fromarray(np.dstack([mid, alpha]), "RGBA").save(os.path.join(d, "png_rgba_300x200.png"))
    ok("png_rgba_300x200.png", "PNG RGBA (alpha dropped, not composited)")
    Image.fromarray(small).save(os.path.join(d, "png_odd_37x23.png"))
    ok("png_odd_37x23.png", "small odd-sized PNG")
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.fromarray(mid).save(os.path.join(d, "png_exif6_300x200.png"), exif=ex.tobytes())
    ok("png_exif6_300x200.png", "PNG with an eXIf chunk, orientation 6")
    Image.fromarray(mid).save(os.path.join(d, "png_named.jpg"), "PNG")
    ok("png_named.jpg", "PNG content with a .jpg name (format is sniffed)")
    Image.fromarray(mid).save(os.path.join(d, "jpeg_named.png"), "JPEG", quality=90)
    ok("jpeg_named.png", "JPEG content with a .png name")
    # Harmless oddities seen in camera files: must NOT be taken for corruption.
    mj = jpeg_bytes(mid, quality=90)
    dqt = mj.index(b"\xff\xdb")
    open(os.path.join(d, "jpeg_header_padding.jpg"), "wb").write(mj[:dqt] + b"\0" * 5 + mj[dqt:])
    ok("jpeg_header_padding.jpg", "5 zero bytes before DQT (libjpeg warns 'extraneous bytes')")
    open(os.path.join(d, "jpeg_trailing_garbage.jpg"), "wb").write(mj + b"garbage after EOI" * 8)
    ok("jpeg_trailing_garbage.jpg", "bytes after the EOI marker (ignored)")

    # --- bad files ---
    open(os.path.join(d, "empty.jpg"), "wb").close()
    bad("empty.jpg", "empty file", "zero bytes")
    jb = open(os.path.join(d, "jpeg_baseline_600x450.jpg"), "rb").read()
    open(os.path.join(d, "truncated.jpg"), "wb").write(jb[:len(jb) * 6 // 10])
    bad("truncated.jpg", "truncated or corrupt JPEG data", "first 60% of the baseline JPEG")
    pj = open(os.path.join(d, "jpeg_progressive_600x450.jpg"), "rb").read()
    open(os.path.join(d, "truncated_progressive.jpg"), "wb").write(pj[:len(pj) * 6 // 10])
    bad("truncated_progressive.jpg", "truncated or corrupt JPEG data",
        "first 60% of the progressive JPEG")
    pb = open(os.path.join(d, "png_rgb8_600x450.png"), "rb").read()
    open(os.path.join(d, "truncated.png"), "wb").write(pb[:len(pb) * 6 // 10])
    bad("truncated.png", "truncated PNG data", "first 60% of the RGB PNG")
    open(os.path.join(d, "corrupt.jpg"), "wb").write(corrupt_jpeg(jb, np.random.default_rng(7)))
    bad("corrupt.jpg", "truncated or corrupt JPEG data",
        "400 random bytes in the middle of the entropy-coded data (PIL decodes it silently)")
    open(os.path.join(d, "text.jpg"), "w").write("this is not an image\n" * 20)
    bad("text.jpg", "not a JPEG or PNG image", "a text file named .jpg")
    im = Image.fromarray(mid)
    im.save(os.path.join(d, "image.webp"), "WEBP")
    bad("image.webp", "unsupported image format webp", "WebP (PIL)")
    im.save(os.path.join(d, "image.tiff"), "TIFF")
    bad("image.tiff", "unsupported image format tiff", "TIFF (PIL)")
    im.save(os.path.join(d, "image.gif"), "GIF")
    bad("image.gif", "unsupported image format gif", "GIF (PIL)")
    im.save(os.path.join(d, "image.bmp"), "BMP")
    bad("image.bmp", "unsupported image format bmp", "BMP (PIL)")
    open(os.path.join(d, "image.heic"), "wb").write(
        struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0mif1heic" + b"\0" * 64)
    bad("image.heic", "unsupported image format heic", "HEIC ftyp box only (hand-made)")
    open(os.path.join(d, "image.jp2"), "wb").write(b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 64)
    bad("image.jp2", "unsupported image format jpeg2000", "JPEG 2000 signature box (hand-made)")
    tiny = lesion_image(48, 64, 6)
    open(os.path.join(d, "bomb_30000x30000.jpg"), "wb").write(
        set_jpeg_sof_size(jpeg_bytes(tiny, quality=90), 30000, 30000))
    bad("bomb_30000x30000.jpg", "30000 x 30000", "64x48 JPEG whose SOF0 claims 30000x30000")
    b = io.BytesIO()
    Image.fromarray(tiny).save(b, "PNG")
    open(os.path.join(d, "bomb_20000x20000.png"), "wb").write(
        set_png_ihdr_size(b.getvalue(), 20000, 20000))
    bad("bomb_20000x20000.png", "20000 x 20000",
        "64x48 PNG whose IHDR claims 20000x20000 (CRC fixed)")
    os.symlink("does_not_exist.jpg", os.path.join(d, "broken_symlink.jpg"))
    bad("broken_symlink.jpg", "broken symbolic link", "symlink to a missing file")
    os.mkdir(os.path.join(d, "directory.jpg"))
    bad("directory.jpg", "is a directory", "a directory named .jpg")
    return rows


def pil_decode(path):
    with warnings.catch_warnings():  # PIL warns "Corrupt EXIF data" for the malformed-EXIF files
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def torch_resize(arr, oh, ow, antialias):
    x = torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=antialias)
    return (y[0].permute(1, 2, 0).numpy() / 127.5 - 1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    h5_path = os.path.join(a.out, H5_NAME)
    sha = script_sha()
    if not a.force and os.path.exists(h5_path):
        try:
            with h5py.File(h5_path, "r") as f:
                if (int(f.attrs["format_version"]) == FORMAT_VERSION
                        and f.attrs["script_sha256"] == sha):
                    print("make_images: %s is up to date" % h5_path)
                    return 0
        except Exception:  # unreadable or partial: regenerate
            pass

    tmp_dir = os.path.join(a.out, "images.tmp-%d" % os.getpid())
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    rows = build_images(tmp_dir)
    with open(os.path.join(tmp_dir, "manifest.tsv"), "w") as f:
        f.write("# file\texpected ('ok' or a substring of the error message)\twhat it is\n")
        for r in rows:
            f.write("\t".join(r) + "\n")

    tmp_h5 = h5_path + ".tmp-%d" % os.getpid()
    with h5py.File(tmp_h5, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["script_sha256"] = sha
        f.attrs["pil_version"] = PIL.__version__
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["generator"] = "tests/reference/make_images.py"
        decoded = {}
        for name, expect, _ in rows:
            if expect != "ok":
                continue
            arr = pil_decode(os.path.join(tmp_dir, name))
            decoded[name] = arr
            f.create_dataset("decoded/" + name, data=arr)
        # 16-bit gray: PIL opens mode "I" and convert('RGB') clips at 255; the engine keeps the
        # high byte (what PIL does for 16-bit RGB), see engine/image_io.cpp.
        with Image.open(os.path.join(tmp_dir, "png_gray16_300x200.png")) as im:
            hi = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        ds = f.create_dataset("expected/png_gray16_300x200.png", data=np.dstack([hi, hi, hi]))
        ds.attrs["why"] = "engine keeps the high byte of 16-bit gray; PIL clips the value at 255"
        with Image.open(os.path.join(tmp_dir, "jpeg_1024x1024.jpg")) as im:
            im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
            ds = f.create_dataset("draft/jpeg_1024x1024.jpg", data=np.asarray(im.convert("RGB")))
            ds.attrs["scale"] = 2
        cases = [(n, 299, 299) for n in ("jpeg_baseline_600x450.jpg", "jpeg_1024x1024.jpg",
                                         "jpeg_gray_600x450.jpg", "jpeg_exif6_600x450.jpg",
                                         "jpeg_odd_37x23.jpg", "png_odd_37x23.png")]
        cases += [("jpeg_baseline_600x450.jpg", 150, 200), ("jpeg_baseline_600x450.jpg", 450, 600),
                  ("jpeg_odd_37x23.jpg", 40, 30)]
        for name, oh, ow in cases:
            for filt in ("bilinear", "antialias"):
                key = "resize/%s_%dx%d_%s" % (name, oh, ow, filt)
                ds = f.create_dataset(key, data=torch_resize(decoded[name], oh, ow,
                                                             filt == "antialias"))
                ds.attrs["source"] = name
                ds.attrs["filter"] = filt
                ds.attrs["out_h"] = oh
                ds.attrs["out_w"] = ow

    final_dir = os.path.join(a.out, "images")
    if os.path.lexists(final_dir):
        shutil.rmtree(final_dir)
    os.rename(tmp_dir, final_dir)
    os.replace(tmp_h5, h5_path)
    print("make_images: wrote %d files into %s and %s" % (len(rows), final_dir, h5_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
