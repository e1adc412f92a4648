// engine/preprocessing.h: how an image file becomes the network's input, as one value. A
// `Preprocessing` is written into every cache (`preprocessing` attribute, weights/CACHE.md) and
// every head file (models/head_keras.h) as its key() string, e.g.
//   size=299;resize=antialias;dct_min_side=0;exif_orientation=1;scale=x/127.5-1
// and read back with parse(), so tools/extract (which writes it) and tools/predict (which must
// make features exactly as in training) cannot disagree on its meaning. preprocess_image() is the
// one decode + resize + scale path both use. Tests: tests/test_preprocessing.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/image_io.h"
#include "engine/inception_contract.h"
#include "kernels/resize.h"

namespace engine {

// The pixel scaling after the resize; only Keras' 'tf' mode exists (kernels/resize.h).
enum class PixelScale { KerasTf };           // x / 127.5 - 1: [0, 255] -> [-1, 1]
const char* pixel_scale_name(PixelScale s);  // "x/127.5-1"

struct Preprocessing {
  int64_t size = kInceptionInput;  // output height = width
  ResizeFilter resize = ResizeFilter::Antialias;
  // Decoder options (engine/image_io.h DecodeOptions): JPEG DCT-domain downscaling (0 = full
  // size) and EXIF rotation. The JPEG decoder itself is implied by `resize`: tf1 reproduces
  // tf.io.decode_jpeg, the others PIL, so it is not a field of its own (jpeg_flavor()).
  int64_t dct_min_side = 0;
  bool exif_orientation = true;
  PixelScale scale = PixelScale::KerasTf;

  // What tools/extract's flags mean: --resize F and --dct-scale. tf1 implies TF's decode: no EXIF
  // rotation and no DCT scaling (kernels/resize.h decode_options_for), whatever --dct-scale says.
  static Preprocessing for_resize(ResizeFilter f, bool dct_scale);

  // The exact string stored in caches and head files; fields in this fixed order.
  std::string key() const;
  // Inverse of key(). Fields may come in any order; each of the five exactly once. Errors are
  // one line "<where>: preprocessing '<key>': <what>" naming the bad field (unknown or repeated
  // field, missing field, bad number, unknown resize mode or scale, tf1 with EXIF rotation or DCT
  // scaling, which no decoder setting reproduces).
  static Preprocessing parse(const std::string& key, const std::string& where);

  DecodeOptions::JpegFlavor jpeg_flavor() const;
  // The decoder settings; max_pixels is a safety limit (tools/extract --max-pixels), not part of
  // the value: it decides which files are refused, never the pixels of those accepted.
  DecodeOptions decode_options(int64_t max_pixels = DecodeOptions{}.max_pixels) const;
  int64_t floats() const { return size * size * 3; }  // one preprocessed image, HWC

  bool operator==(const Preprocessing& o) const;
  bool operator!=(const Preprocessing& o) const { return !(*this == o); }
};

// The network input of one image: decode `data` (errors name `name`), resize to pre.size x
// pre.size with pre.resize, scale; `out` holds pre.floats() floats, HWC.
void preprocess_image(const uint8_t* data, size_t size, const std::string& name,
                      const Preprocessing& pre, float* out,
                      int64_t max_pixels = DecodeOptions{}.max_pixels);
inline void preprocess_image(const std::vector<uint8_t>& bytes, const std::string& name,
                             const Preprocessing& pre, float* out,
                             int64_t max_pixels = DecodeOptions{}.max_pixels) {
  preprocess_image(bytes.data(), bytes.size(), name, pre, out, max_pixels);
}
// The same from an already decoded image (decoded with pre.decode_options()): resize + scale.
void preprocess_image(const Image8& img, const Preprocessing& pre, float* out);

}  // namespace engine
