// kernels/resize.h: the Inception preprocessing of one image: RGB8 (any size) -> out_h x out_w x 3
// float32 in [-1, 1] (x / 127.5 - 1, Keras 'tf' mode), resized in float (no rounding to 8 bits
// between resize and scaling). Two filters, both with half-pixel centres (align_corners=False):
//  - Bilinear: 2x2 taps, no antialiasing = torch F.interpolate(mode='bilinear',
//    align_corners=False, antialias=False) = TF2 tf.image.resize(method='bilinear').
//  - Antialias: triangle filter whose support grows with the downscale factor (area-averaging
//    for large reductions) = torch F.interpolate(..., antialias=True) = PIL Image.BILINEAR.
//  - Tf1: TF1's tf.image.resize_bilinear (= tf.compat.v1.image.resize_bilinear,
//    align_corners=False, half_pixel_centers=False), the resize of the TF retrain tutorial
//    (retrain.py): src = dst * (in / out) in float, no half-pixel offset, no antialiasing;
//    bit-exact with TF's CPU kernel (same float operations in the same order), then x / 127.5 - 1
//    in float. Together with decode_options_for(Tf1) (tf.io.decode_jpeg's INTEGER_FAST DCT, no EXIF
//    rotation) it reproduces retrain.py's decode + resize exactly (tests/test_keras.cpp). The
//    scaling is Keras' x / 127.5 - 1, not retrain.py's (x - 128) / 128: the Keras Inception
//    weights were trained with the former (retrain.py's 128/128 belonged to its own 2015 graph).
// CPU only (no CUDA twin). Tests: tests/test_image_io.cpp (PIL / torch references),
// tests/test_keras.cpp (TF's own resize, bit-exact for Tf1). Bench: bench/bench_decode.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "engine/image_io.h"

namespace engine {

enum class ResizeFilter { Bilinear, Antialias, Tf1 };
const char* resize_filter_name(ResizeFilter f);             // "bilinear" / "antialias" / "tf1"
ResizeFilter parse_resize_filter(const std::string& name);  // throws Error on anything else

// The decode settings a resize mode implies, on top of `base`: Tf1 decodes JPEGs as
// tf.io.decode_jpeg does (JpegFlavor::TensorFlow), without EXIF rotation and without DCT scaling
// (dct_min_side 0); Bilinear and Antialias return `base` unchanged. preprocess_image
// (engine/preprocessing.h), which extract and predict call, goes through this, so a cache's
// `resize=` setting fixes both steps.
DecodeOptions decode_options_for(ResizeFilter f, DecodeOptions base = {});

// out: out_h * out_w * 3 floats, HWC.
void resize_to_unit_range_cpu(const Image8& img, int64_t out_h, int64_t out_w, ResizeFilter filter,
                              float* out);

}  // namespace engine
