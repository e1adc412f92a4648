// tests/test_preprocessing.cpp: the Preprocessing value (engine/preprocessing.h). key() must give
// byte for byte the strings tools/extract has always written (caches and head files made before
// still compare equal), parse() must invert it for every mode and refuse anything else with one
// line naming the file and the field, and preprocess_image must be exactly "decode with these
// options, then resize" for every mode (bit for bit, on the reference images of
// tests/reference/make_images.py). Run: ctest -R test_preprocessing.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "kernels/resize.h"
#include "tests/test_util.h"

namespace engine {
namespace {

// Every setting tools/extract can be run with, and the string it wrote for it before the
// Preprocessing type existed (tools/extract.cpp at 0aea384; weights/CACHE.md).
struct Mode {
  ResizeFilter filter;
  bool dct_scale;
  const char* key;
};
const Mode kModes[] = {
    {ResizeFilter::Antialias, false,
     "size=299;resize=antialias;dct_min_side=0;exif_orientation=1;scale=x/127.5-1"},
    {ResizeFilter::Antialias, true,
     "size=299;resize=antialias;dct_min_side=299;exif_orientation=1;scale=x/127.5-1"},
    {ResizeFilter::Bilinear, false,
     "size=299;resize=bilinear;dct_min_side=0;exif_orientation=1;scale=x/127.5-1"},
    {ResizeFilter::Bilinear, true,
     "size=299;resize=bilinear;dct_min_side=299;exif_orientation=1;scale=x/127.5-1"},
    // tf1 ignores --dct-scale: TF decodes full size and never rotates.
    {ResizeFilter::Tf1, false,
     "size=299;resize=tf1;dct_min_side=0;exif_orientation=0;scale=x/127.5-1"},
    {ResizeFilter::Tf1, true,
     "size=299;resize=tf1;dct_min_side=0;exif_orientation=0;scale=x/127.5-1"},
};

TEST(Preprocessing, KeyIsWhatExtractAlwaysWrote) {
  for (const Mode& m : kModes)
    EXPECT_EQ(Preprocessing::for_resize(m.filter, m.dct_scale).key(), m.key)
        << resize_filter_name(m.filter) << " dct_scale " << m.dct_scale;
  EXPECT_EQ(Preprocessing{}.key(), kModes[0].key);  // the default is extract's default
}

TEST(Preprocessing, LiteralKeysParseToTheirValues) {
  for (const Mode& m : kModes) {
    const Preprocessing p = Preprocessing::parse(m.key, "head.h5");
    EXPECT_EQ(p.size, 299) << m.key;
    EXPECT_EQ(p.resize, m.filter) << m.key;
    const bool tf1 = m.filter == ResizeFilter::Tf1;
    EXPECT_EQ(p.dct_min_side, m.dct_scale && !tf1 ? 299 : 0) << m.key;
    EXPECT_EQ(p.exif_orientation, !tf1) << m.key;
    EXPECT_EQ(p.scale, PixelScale::KerasTf) << m.key;
    EXPECT_EQ(p.jpeg_flavor(),
              tf1 ? DecodeOptions::JpegFlavor::TensorFlow : DecodeOptions::JpegFlavor::Pil);
    EXPECT_EQ(p.key(), m.key);
  }
  // Field order is not significant (only key() fixes one).
  const Preprocessing q = Preprocessing::parse(
      "scale=x/127.5-1;exif_orientation=1;dct_min_side=299;resize=bilinear;size=299", "x");
  EXPECT_EQ(q, Preprocessing::for_resize(ResizeFilter::Bilinear, true));
}

TEST(Preprocessing, RoundTripEveryValue) {
  for (ResizeFilter f : {ResizeFilter::Antialias, ResizeFilter::Bilinear, ResizeFilter::Tf1})
    for (int64_t size : {1, 224, 299, 512})
      for (int64_t dct : {0, 1, 256, 299, 1024})
        for (bool exif : {false, true}) {
          Preprocessing p;
          p.size = size;
          p.resize = f;
          p.dct_min_side = dct;
          p.exif_orientation = exif;
          if (f == ResizeFilter::Tf1 && (dct != 0 || exif)) continue;  // refused, tested below
          EXPECT_EQ(Preprocessing::parse(p.key(), "c.h5"), p) << p.key();
        }
  // operator== sees every field.
  Preprocessing a, b;
  b.size = 300;
  EXPECT_NE(a, b);
  b = a, b.resize = ResizeFilter::Bilinear;
  EXPECT_NE(a, b);
  b = a, b.dct_min_side = 299;
  EXPECT_NE(a, b);
  b = a, b.exif_orientation = false;
  EXPECT_NE(a, b);
}

// parse(key, "run/head.h5") must throw one line holding every piece.
::testing::AssertionResult refused(const std::string& key, const std::vector<std::string>& pieces) {
  try {
    Preprocessing::parse(key, "run/head.h5");
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "several lines: " << m;
    for (const std::string& p : std::vector<std::string>{"run/head.h5", "'" + key + "'"})
      if (m.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "lacks " << p << ": " << m;
    for (const std::string& p : pieces)
      if (m.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "lacks " << p << ": " << m;
    return ::testing::AssertionSuccess() << m;
  }
  return ::testing::AssertionFailure() << "accepted " << key;
}

TEST(Preprocessing, BadKeysAreRefusedNamingTheField) {
  const std::string ok =
      "size=299;resize=antialias;dct_min_side=0;exif_orientation=1;scale=x/127.5-1";
  EXPECT_TRUE(refused(ok + ";gamma=2", {"unknown field 'gamma'"}));
  EXPECT_TRUE(refused("size=299;resize=antialias;dct_min_side=0;scale=x/127.5-1",
                      {"missing field 'exif_orientation'"}));
  EXPECT_TRUE(refused("size=299;resize=bilinear", {"missing field 'dct_min_side'"}));
  EXPECT_TRUE(refused("", {"empty field"}));
  EXPECT_TRUE(refused(ok + ";", {"empty field"}));
  EXPECT_TRUE(refused(ok + ";size=299", {"'size' given twice"}));
  EXPECT_TRUE(refused("size;resize=antialias", {"'size' has no '='"}));
  for (const char* n : {"", "-1", "2x", " 299", "0299", "1e3", "9999999999", "0"})
    EXPECT_TRUE(refused("size=" + std::string(n) +
                            ";resize=antialias;dct_min_side=0;exif_orientation=1;scale=x/127.5-1",
                        {"size: bad number '" + std::string(n) + "'"}));
  EXPECT_TRUE(
      refused("size=299;resize=antialias;dct_min_side=-299;exif_orientation=1;scale=x/127.5-1",
              {"dct_min_side: bad number '-299'"}));
  EXPECT_TRUE(refused("size=299;resize=bicubic;dct_min_side=0;exif_orientation=1;scale=x/127.5-1",
                      {"resize: unknown resize filter 'bicubic'"}));
  EXPECT_TRUE(
      refused("size=299;resize=antialias;dct_min_side=0;exif_orientation=yes;scale=x/127.5-1",
              {"exif_orientation: bad value 'yes'"}));
  EXPECT_TRUE(
      refused("size=299;resize=antialias;dct_min_side=0;exif_orientation=1;scale=(x-128)/128",
              {"scale: unknown scale '(x-128)/128'"}));
  EXPECT_TRUE(refused("size=299;resize=tf1;dct_min_side=0;exif_orientation=1;scale=x/127.5-1",
                      {"resize=tf1 implies dct_min_side=0 and exif_orientation=0"}));
  EXPECT_TRUE(refused("size=299;resize=tf1;dct_min_side=299;exif_orientation=0;scale=x/127.5-1",
                      {"resize=tf1 implies"}));
}

TEST(Preprocessing, DecodeOptionsFollowTheValue) {
  const DecodeOptions t = Preprocessing::for_resize(ResizeFilter::Tf1, true).decode_options(1234);
  EXPECT_EQ(t.jpeg_flavor, DecodeOptions::JpegFlavor::TensorFlow);
  EXPECT_FALSE(t.apply_exif_orientation);
  EXPECT_EQ(t.dct_min_side, 0);
  EXPECT_EQ(t.max_pixels, 1234);
  const DecodeOptions a = Preprocessing::for_resize(ResizeFilter::Antialias, true).decode_options();
  EXPECT_EQ(a.jpeg_flavor, DecodeOptions::JpegFlavor::Pil);
  EXPECT_TRUE(a.apply_exif_orientation);
  EXPECT_EQ(a.dct_min_side, 299);
  EXPECT_EQ(a.max_pixels, DecodeOptions{}.max_pixels);
}

std::string image_path(const std::string& name) { return test::reference_file("images/" + name); }

// preprocess_image == decode with the options each mode stands for, written out here by hand
// (not through Preprocessing), then the resize: bit for bit. The images make every option show:
// 1024x1024 (DCT scaling), EXIF orientation 6 (rotation), CMYK (the decoder's CMYK formula),
// and a PNG (no JPEG options apply).
TEST(Preprocessing, PreprocessImageIsDecodeThenResize) {
  const char* const images[] = {"jpeg_1024x1024.jpg", "jpeg_exif6_600x450.jpg",
                                "jpeg_cmyk_600x450.jpg", "png_rgb8_600x450.png"};
  for (const Mode& m : kModes) {
    const Preprocessing pre = Preprocessing::parse(m.key, "test");
    DecodeOptions by_hand;
    if (m.filter == ResizeFilter::Tf1) {
      by_hand.jpeg_flavor = DecodeOptions::JpegFlavor::TensorFlow;
      by_hand.apply_exif_orientation = false;
    } else {
      by_hand.dct_min_side = m.dct_scale ? 299 : 0;
    }
    for (const char* name : images) {
      const std::vector<uint8_t> bytes = read_image_file_bytes(image_path(name));
      std::vector<float> got(size_t(pre.floats())), want(got.size(), 7.f);
      preprocess_image(bytes, name, pre, got.data());
      const Image8 img = decode_image_memory(bytes.data(), bytes.size(), name, by_hand);
      resize_to_unit_range_cpu(img, 299, 299, m.filter, want.data());
      EXPECT_EQ(got, want) << m.key << " " << name;
      // The decoded-image overload is the same resize.
      std::vector<float> again(got.size(), 7.f);
      preprocess_image(img, pre, again.data());
      EXPECT_EQ(again, want) << m.key << " " << name;
    }
  }
  // max_pixels reaches the decoder: a limit below 600 x 450 refuses the file, naming it.
  const std::vector<uint8_t> bytes = read_image_file_bytes(image_path("jpeg_exif6_600x450.jpg"));
  std::vector<float> out(size_t(Preprocessing{}.floats()));
  try {
    preprocess_image(bytes, "x/lesion.jpg", Preprocessing{}, out.data(), 600 * 450 - 1);
    ADD_FAILURE() << "a 600 x 450 image passed max_pixels 269999";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x/lesion.jpg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("269999"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace engine
