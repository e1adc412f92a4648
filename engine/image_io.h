// engine/image_io.h: decoding dermoscopy images into 8-bit RGB. The format is decided by the
// file's first bytes, never by its extension: JPEG through libjpeg-turbo (baseline, progressive,
// grayscale, CMYK/YCCK converted to RGB, EXIF orientation applied, optional DCT-domain scaling)
// and PNG through libpng (8/16-bit, gray, palette, tRNS/alpha dropped). Everything else (WebP,
// TIFF, GIF, BMP, text, empty, truncated, corrupt) and images over the pixel limit (decompression
// bombs, checked from the header before any pixel is decoded) throw engine::Error with one line
// "<path>: <reason>". Thread-safe: no shared state.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace engine {

struct Image8 {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major, RGB
};

struct DecodeOptions {
  // Largest accepted width*height as stored in the file (before DCT scaling): 100 megapixels
  // (a 10000x10000 image, ~300 MB of RGB). Larger headers are refused as decompression bombs.
  int64_t max_pixels = 100'000'000;
  // JPEG only: when > 0, decode at the smallest libjpeg-turbo SIMD-fast scale (1/1, 1/2, 1/4)
  // whose output still has both sides >= min_side (e.g. 299); 0 = full-size decode.
  int64_t dct_min_side = 0;
  bool apply_exif_orientation = true;
  // JPEG only: whose decoder to reproduce bit for bit.
  //  Pil: PIL / libjpeg defaults: JDCT_ISLOW, fancy upsampling, PIL's CMYK formula (default).
  //  TensorFlow: tf.io.decode_jpeg(contents, channels=3) with its defaults (what retrain.py ran):
  //    JDCT_IFAST ("INTEGER_FAST", TF's chosen default), fancy upsampling, and TF's CMYK -> RGB
  //    (r = k * c / 255 with an Adobe marker, (255 - k) * (255 - c) / 255 without, truncating).
  //    TF ignores EXIF orientation: callers wanting TF's pixels also clear apply_exif_orientation
  //    (kernels/resize.h decode_options_for does both; engine/preprocessing.h's
  //    Preprocessing::decode_options gives the settings of each resize mode).
  enum class JpegFlavor { Pil, TensorFlow };
  JpegFlavor jpeg_flavor = JpegFlavor::Pil;
};

// "jpeg", "png", or the name of a recognised unsupported format ("webp", "tiff", "gif", "bmp",
// "heic", "jpeg2000"), or "unknown".
std::string sniff_image_format(const uint8_t* data, size_t size);

// Reads a whole image file (errors: missing, unreadable, directory, broken symlink, empty, larger
// than 512 MiB), for callers that also hash the bytes (tools/extract).
std::vector<uint8_t> read_image_file_bytes(const std::string& path);
// read_image_file_bytes + decode_image_memory.
Image8 decode_image_file(const std::string& path, const DecodeOptions& opt = {});
// `name` is used in error messages.
Image8 decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                           const DecodeOptions& opt = {});

}  // namespace engine
