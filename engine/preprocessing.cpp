// engine/preprocessing.cpp: the Preprocessing value (key / parse) and preprocess_image, the one
// decode + resize + scale path of tools/extract and tools/predict (engine/preprocessing.h).
#include "engine/preprocessing.h"

#include <array>

#include "engine/error.h"

namespace engine {

namespace {

constexpr const char* kFields[] = {"size", "resize", "dct_min_side", "exif_orientation", "scale"};
constexpr size_t kNumFields = sizeof kFields / sizeof kFields[0];

// A non-negative decimal integer written as std::to_string writes it (no sign, no leading zero,
// no spaces), at most 9 digits: anything else is not a value key() could have written.
bool parse_count(const std::string& t, int64_t* v) {
  if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
    return false;
  if (t.size() > 1 && t[0] == '0') return false;
  *v = std::stoll(t);
  return true;
}

}  // namespace

const char* pixel_scale_name(PixelScale s) {
  switch (s) {
    case PixelScale::KerasTf: return "x/127.5-1";
  }
  fail("invalid PixelScale value ", int(s));
}

Preprocessing Preprocessing::for_resize(ResizeFilter f, bool dct_scale) {
  DecodeOptions d;
  d.dct_min_side = dct_scale ? kInceptionInput : 0;
  d = decode_options_for(f, d);  // the one place that says what tf1 implies for decoding
  Preprocessing p;
  p.resize = f;
  p.dct_min_side = d.dct_min_side;
  p.exif_orientation = d.apply_exif_orientation;
  return p;
}

std::string Preprocessing::key() const {
  // Byte for byte what tools/extract has always written (weights/CACHE.md): caches and heads
  // made before this type existed compare equal to a run with the same settings.
  return "size=" + std::to_string(size) + ";resize=" + resize_filter_name(resize) +
         ";dct_min_side=" + std::to_string(dct_min_side) +
         ";exif_orientation=" + std::to_string(int(exif_orientation)) +
         ";scale=" + pixel_scale_name(scale);
}

Preprocessing Preprocessing::parse(const std::string& key, const std::string& where) {
  auto bad = [&](const auto&... what) { fail(where, ": preprocessing '", key, "': ", what...); };
  std::array<std::string, kNumFields> value;
  std::array<bool, kNumFields> seen{};
  size_t start = 0;
  while (true) {
    const size_t end = key.find(';', start);
    const std::string field =
        key.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const size_t eq = field.find('=');
    if (field.empty()) bad("empty field (stray ';')");
    if (eq == std::string::npos) bad("field '", field, "' has no '='");
    const std::string name = field.substr(0, eq);
    size_t i = 0;
    while (i < kNumFields && name != kFields[i]) ++i;
    if (i == kNumFields)
      bad("unknown field '", name,
          "' (expected size, resize, dct_min_side, exif_orientation, scale)");
    if (seen[i]) bad("field '", name, "' given twice");
    seen[i] = true;
    value[i] = field.substr(eq + 1);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  for (size_t i = 0; i < kNumFields; ++i)
    if (!seen[i]) bad("missing field '", kFields[i], "'");

  Preprocessing p;
  if (!parse_count(value[0], &p.size) || p.size == 0)
    bad("size: bad number '", value[0], "' (expected a positive integer)");
  try {
    p.resize = parse_resize_filter(value[1]);  // the one table of mode names (kernels/resize.h)
  } catch (const Error& e) {
    bad("resize: ", e.what());  // "unknown resize filter '<name>' (expected ...)"
  }
  if (!parse_count(value[2], &p.dct_min_side))
    bad("dct_min_side: bad number '", value[2], "' (expected an integer >= 0)");
  if (value[3] != "0" && value[3] != "1")
    bad("exif_orientation: bad value '", value[3], "' (expected 0 or 1)");
  p.exif_orientation = value[3] == "1";
  if (value[4] != pixel_scale_name(PixelScale::KerasTf))
    bad("scale: unknown scale '", value[4], "' (expected ", pixel_scale_name(PixelScale::KerasTf),
        ")");
  // tf1 means tf.io.decode_jpeg's pixels, which are never rotated or DCT-scaled: a key saying
  // otherwise describes features no run of tools/extract made.
  const DecodeOptions implied = decode_options_for(p.resize, p.decode_options());
  if (implied.dct_min_side != p.dct_min_side ||
      implied.apply_exif_orientation != p.exif_orientation)
    bad("resize=", value[1], " implies dct_min_side=", implied.dct_min_side,
        " and exif_orientation=", int(implied.apply_exif_orientation));
  return p;
}

DecodeOptions::JpegFlavor Preprocessing::jpeg_flavor() const {
  return decode_options_for(resize).jpeg_flavor;
}

DecodeOptions Preprocessing::decode_options(int64_t max_pixels) const {
  DecodeOptions d;
  d.max_pixels = max_pixels;
  d.dct_min_side = dct_min_side;
  d.apply_exif_orientation = exif_orientation;
  d.jpeg_flavor = jpeg_flavor();
  return d;
}

bool Preprocessing::operator==(const Preprocessing& o) const {
  return size == o.size && resize == o.resize && dct_min_side == o.dct_min_side &&
         exif_orientation == o.exif_orientation && scale == o.scale;
}

void preprocess_image(const uint8_t* data, size_t size, const std::string& name,
                      const Preprocessing& pre, float* out, int64_t max_pixels) {
  preprocess_image(decode_image_memory(data, size, name, pre.decode_options(max_pixels)), pre, out);
}

void preprocess_image(const Image8& img, const Preprocessing& pre, float* out) {
  resize_to_unit_range_cpu(img, pre.size, pre.size, pre.resize, out);
}

}  // namespace engine
