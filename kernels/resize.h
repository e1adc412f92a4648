// kernels/resize.h: the Inception preprocessing of one image: RGB8 (any size) -> out_h x out_w x 3
// float32 in [-1, 1] (x / 127.5 - 1, Keras 'tf' mode), resized in float (no rounding to 8 bits
// between resize and scaling). Two filters, both with half-pixel centres (align_corners=False):
//  - Bilinear: 2x2 taps, no antialiasing = torch F.interpolate(mode='bilinear',
//    align_corners=False, antialias=False) = TF2 tf.image.resize(method='bilinear').
//  - Antialias: triangle filter whose support grows with the downscale factor (area-averaging
//    for large reductions) = torch F.interpolate(..., antialias=True) = PIL Image.BILINEAR.
// CPU versions; the CUDA twin comes with the GPU backend.
#pragma once
#include <cstdint>
#include <string>

#include "engine/image_io.h"

namespace engine {

enum class ResizeFilter { Bilinear, Antialias };
const char* resize_filter_name(ResizeFilter f);            // "bilinear" / "antialias"
ResizeFilter parse_resize_filter(const std::string& name);  // throws Error on anything else

// out: out_h * out_w * 3 floats, HWC.
void resize_to_unit_range_cpu(const Image8& img, int64_t out_h, int64_t out_w, ResizeFilter filter,
                              float* out);

}  // namespace engine
