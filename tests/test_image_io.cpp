// tests/test_image_io.cpp: image decoding (engine/image_io.h) and the Inception resize
// (kernels/resize.h) against references written by tests/reference/make_images.py: PIL 9.4's
// decoded pixels (Image.open -> ImageOps.exif_transpose -> convert('RGB')) and torch 1.13
// F.interpolate in float64. Every file in images/manifest.tsv is checked: good ones must equal
// PIL exactly (same libjpeg-turbo, same JDCT_ISLOW + fancy upsampling: no tolerance needed), bad
// ones must throw an engine::Error of one line naming the file and the reason. Resize tolerance:
// 2e-5 abs + 1e-5 rel on [-1, 1] (float32 separable filter vs float64; observed max ~4e-7).
// Closed-form checks need no reference. Run: ctest -R test_image_io, or
// ENGINE_REFERENCE_DIR=<dir> ./test_image_io. Decode + resize as one step (engine/preprocessing.h):
// tests/test_preprocessing.cpp.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "kernels/resize.h"
#include "tests/test_util.h"

namespace engine {
namespace {

using test::read_u8;
using test::reference_file;
using test::tensors_close;
using test::U8Array;

constexpr double kResizeAtol = 2e-5, kResizeRtol = 1e-5;

std::string images_dir() { return reference_file("images"); }
std::string image_path(const std::string& name) { return images_dir() + "/" + name; }

struct ManifestRow {
  std::string file, expect, what;
};

std::vector<ManifestRow> read_manifest() {
  std::ifstream in(images_dir() + "/manifest.tsv");
  if (!in) fail(images_dir(), "/manifest.tsv: cannot open (run tests/reference/make_images.py)");
  std::vector<ManifestRow> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    ManifestRow r;
    std::getline(ls, r.file, '\t');
    std::getline(ls, r.expect, '\t');
    std::getline(ls, r.what);
    rows.push_back(r);
  }
  return rows;
}

class ImageRef : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { file_ = new auto(H5File::open_read(h5_path())); }
  static void TearDownTestSuite() { delete file_, file_ = nullptr; }
  static std::string h5_path() { return reference_file("image_reference.h5"); }
  static hid_t h5() { return file_->id(); }
  // PIL's pixels, or the engine's documented deviation where /expected has one.
  static U8Array expected(const std::string& name) {
    if (h5_exists(h5(), "expected/" + name)) return read_u8(h5(), "expected/" + name, h5_path());
    return read_u8(h5(), "decoded/" + name, h5_path());
  }
  static H5File* file_;
};
H5File* ImageRef::file_ = nullptr;

// Exact equality with a summary (max/mean abs diff, count) in the message either way.
::testing::AssertionResult pixels_equal(const Image8& got, const U8Array& want,
                                        const std::string& what, int max_diff = 0,
                                        double max_mean = 0) {
  if (want.dims.size() != 3 || want.dims[0] != got.height || want.dims[1] != got.width ||
      want.dims[2] != 3)
    return ::testing::AssertionFailure()
           << what << ": decoded " << got.height << " x " << got.width << ", PIL "
           << (want.dims.size() == 3
                   ? std::to_string(want.dims[0]) + " x " + std::to_string(want.dims[1])
                   : std::string("(rank ") + std::to_string(want.dims.size()) + ")");
  const test::U8Diff d = test::u8_diff(got.rgb, want.data);
  std::ostringstream os;
  os << what << ": " << got.height << "x" << got.width << ", max |diff| " << d.max << ", mean "
     << d.mean << ", " << d.count << " values differ";
  if (d.max <= max_diff && d.mean <= max_mean) return ::testing::AssertionSuccess() << os.str();
  os << "; worst at flat index " << d.worst << ": got " << int(got.rgb[size_t(d.worst)])
     << ", want " << int(want.data[size_t(d.worst)]);
  return ::testing::AssertionFailure() << os.str();
}

// Runs fn, expects engine::Error with one line containing every piece.
template <typename Fn>
::testing::AssertionResult throws_with(Fn fn, const std::vector<std::string>& pieces) {
  try {
    fn();
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "message has several lines: " << m;
    for (const auto& p : pieces)
      if (m.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << m;
    return ::testing::AssertionSuccess() << m;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-engine exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

TEST_F(ImageRef, FormatVersion) {
  EXPECT_EQ(h5_read_int_attr(h5(), "format_version", h5_path()), 1);
}

// Every manifest row: good files equal PIL, bad files throw with path + reason.
TEST_F(ImageRef, EveryManifestEntry) {
  auto rows = read_manifest();
  ASSERT_GT(rows.size(), 30u);
  for (const auto& r : rows) {
    SCOPED_TRACE(r.file + " (" + r.what + ")");
    const std::string path = image_path(r.file);
    if (r.expect == "ok") {
      Image8 img = decode_image_file(path);
      auto res = pixels_equal(img, expected(r.file), r.file);
      EXPECT_TRUE(res);
      std::printf("  %-34s %s\n", r.file.c_str(), res.message());
    } else {
      auto res = throws_with([&] { decode_image_file(path); }, {path, r.expect});
      EXPECT_TRUE(res);
      std::printf("  %-34s %s\n", r.file.c_str(), res.message());
    }
  }
}

TEST_F(ImageRef, ExifOrientationSwapsAndMatchesPil) {
  for (int o : {3, 6, 8}) {
    std::string name = "jpeg_exif" + std::to_string(o) + "_600x450.jpg";
    Image8 img = decode_image_file(image_path(name));
    EXPECT_EQ(img.width, o == 3 ? 600 : 450) << name;
    EXPECT_EQ(img.height, o == 3 ? 450 : 600) << name;
    EXPECT_TRUE(pixels_equal(img, expected(name), name));
    // Without orientation: the stored pixels, identical to the orientation-free baseline file.
    DecodeOptions raw;
    raw.apply_exif_orientation = false;
    Image8 stored = decode_image_file(image_path(name), raw);
    EXPECT_TRUE(pixels_equal(stored, expected("jpeg_baseline_600x450.jpg"), name + " raw"));
  }
  for (int o : {2, 4, 5, 7}) {
    std::string name = "jpeg_exif" + std::to_string(o) + "_mm_300x200.jpg";
    Image8 img = decode_image_file(image_path(name));
    EXPECT_EQ(img.width, o >= 5 ? 200 : 300) << name;
    EXPECT_TRUE(pixels_equal(img, expected(name), name));
  }
  Image8 png = decode_image_file(image_path("png_exif6_300x200.png"));
  EXPECT_EQ(png.width, 200);
  EXPECT_EQ(png.height, 300);
  // Malformed EXIF: orientation ignored, not an error.
  Image8 m = decode_image_file(image_path("jpeg_exif_malformed.jpg"));
  EXPECT_EQ(m.width, 300);
}

TEST_F(ImageRef, CmykAnd16BitMatchPil) {
  // CMYK: PIL's own integer formula is used, so the match is exact (tolerance 0).
  EXPECT_TRUE(pixels_equal(decode_image_file(image_path("jpeg_cmyk_600x450.jpg")),
                           read_u8(h5(), "decoded/jpeg_cmyk_600x450.jpg", h5_path()), "cmyk"));
  EXPECT_TRUE(pixels_equal(decode_image_file(image_path("png_rgb16_300x200.png")),
                           read_u8(h5(), "decoded/png_rgb16_300x200.png", h5_path()), "rgb16"));
  // 16-bit gray: the high byte (documented deviation), PIL itself clips -> differs.
  Image8 g = decode_image_file(image_path("png_gray16_300x200.png"));
  EXPECT_TRUE(pixels_equal(g, expected("png_gray16_300x200.png"), "gray16 high byte"));
  EXPECT_FALSE(pixels_equal(g, read_u8(h5(), "decoded/png_gray16_300x200.png", h5_path()),
                            "gray16 vs PIL's clip"));
}

TEST_F(ImageRef, BombsRefusedBeforeDecoding) {
  EXPECT_TRUE(throws_with([&] { decode_image_file(image_path("bomb_30000x30000.jpg")); },
                          {"30000 x 30000", "100000000", "bomb_30000x30000.jpg"}));
  EXPECT_TRUE(throws_with([&] { decode_image_file(image_path("bomb_20000x20000.png")); },
                          {"20000 x 20000", "100000000", "bomb_20000x20000.png"}));
  // A lower limit refuses a real image the same way.
  DecodeOptions small;
  small.max_pixels = 600 * 450 - 1;
  EXPECT_TRUE(
      throws_with([&] { decode_image_file(image_path("jpeg_baseline_600x450.jpg"), small); },
                  {"600 x 450", "269999"}));
  EXPECT_TRUE(throws_with([&] { decode_image_file(image_path("png_rgb8_600x450.png"), small); },
                          {"600 x 450", "269999"}));
  small.max_pixels = 600 * 450;
  EXPECT_NO_THROW(decode_image_file(image_path("jpeg_baseline_600x450.jpg"), small));
}

TEST_F(ImageRef, DctScaling) {
  DecodeOptions o;
  o.dct_min_side = 299;
  Image8 big = decode_image_file(image_path("jpeg_1024x1024.jpg"), o);
  EXPECT_EQ(big.width, 512);  // 1/4 would give 256 < 299
  EXPECT_EQ(big.height, 512);
  // Same libjpeg scaled IDCT as PIL's draft(): exact.
  EXPECT_TRUE(pixels_equal(big, read_u8(h5(), "draft/jpeg_1024x1024.jpg", h5_path()),
                           "1024 at 1/2 vs PIL draft"));
  // What DCT scaling costs in accuracy after the antialiased resize to 299, i.e. what
  // tools/extract --dct-scale changes (informational, with a loose bound: the half-size IDCT is a
  // box-like prefilter, close to what the triangle does).
  {
    const std::vector<uint8_t> bytes = read_image_file_bytes(image_path("jpeg_1024x1024.jpg"));
    const Preprocessing full = Preprocessing::for_resize(ResizeFilter::Antialias, false);
    const Preprocessing dct = Preprocessing::for_resize(ResizeFilter::Antialias, true);
    std::vector<float> a(size_t(full.floats())), b(a.size());
    preprocess_image(bytes, "jpeg_1024x1024.jpg", full, a.data());
    preprocess_image(bytes, "jpeg_1024x1024.jpg", dct, b.data());
    double mx = 0, sum = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      mx = std::max(mx, double(std::fabs(a[i] - b[i])));
      sum += std::fabs(a[i] - b[i]);
    }
    std::printf(
        "  1024x1024 -> 299 antialias, DCT 1/2 vs full decode: max |diff| %.4f, mean %.5f"
        " (on [-1, 1])\n",
        mx, sum / double(a.size()));
    EXPECT_LT(sum / double(a.size()), 0.02);
  }
  Image8 base = decode_image_file(image_path("jpeg_baseline_600x450.jpg"), o);
  EXPECT_EQ(base.width, 600);  // 1/2 would give 225 < 299
  EXPECT_EQ(base.height, 450);
  o.dct_min_side = 256;
  Image8 q = decode_image_file(image_path("jpeg_1024x1024.jpg"), o);
  EXPECT_EQ(q.width, 256);
  // PNG ignores dct_min_side.
  Image8 png = decode_image_file(image_path("png_rgb8_600x450.png"), o);
  EXPECT_EQ(png.width, 600);
}

TEST_F(ImageRef, ResizeMatchesTorch) {
  auto keys = test::group_members(h5(), "resize");
  ASSERT_GE(keys.size(), 18u);
  for (const auto& k : keys) {
    const std::string obj = "resize/" + k;
    H5Id ds = h5_open_object(h5(), obj, h5_path());
    const std::string src = h5_read_string_attr(ds.get(), "source", h5_path());
    const ResizeFilter f = parse_resize_filter(h5_read_string_attr(ds.get(), "filter", h5_path()));
    const int64_t oh = h5_read_int_attr(ds.get(), "out_h", h5_path());
    const int64_t ow = h5_read_int_attr(ds.get(), "out_w", h5_path());
    Tensor want = h5_read_tensor(h5(), obj, h5_path());
    Image8 img = decode_image_file(image_path(src));
    std::vector<float> got(size_t(oh * ow * 3));
    resize_to_unit_range_cpu(img, oh, ow, f, got.data());
    auto res = tensors_close(got.data(), want.data(), want.numel(), kResizeAtol, kResizeRtol, k);
    EXPECT_TRUE(res);
    std::printf("  %s\n", res.message());
  }
}

// Random byte damage (outside the first bytes) must give a clean engine::Error or an image,
// never a crash, hang or another exception type (run under ASan/UBSan when touching the decoders).
TEST_F(ImageRef, RandomDamageNeverCrashes) {
  std::mt19937 gen(123);
  int ok = 0, err = 0;
  for (const char* name : {"jpeg_baseline_600x450.jpg", "jpeg_progressive_600x450.jpg",
                           "png_rgb8_600x450.png", "jpeg_exif6_600x450.jpg"}) {
    std::ifstream in(image_path(name), std::ios::binary);
    std::vector<uint8_t> orig((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    ASSERT_GT(orig.size(), 1000u) << name;
    for (int trial = 0; trial < 60; ++trial) {
      std::vector<uint8_t> d = orig;
      const int flips = 1 + int(gen() % 8);
      for (int f = 0; f < flips; ++f) d[8 + gen() % (d.size() - 8)] = uint8_t(gen());
      if (trial % 4 == 3) d.resize(8 + gen() % (d.size() - 8));
      try {
        Image8 im = decode_image_memory(d.data(), d.size(), name);
        EXPECT_EQ(im.rgb.size(), size_t(im.width * im.height * 3));
        ++ok;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
        ++err;
      }
    }
  }
  std::printf("  damaged files: %d decoded, %d rejected with engine::Error\n", ok, err);
}

TEST(ImageErrors, FileSystemCases) {
  char tmpl[] = "/tmp/test_image_io.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  EXPECT_TRUE(throws_with([&] { decode_image_file(dir + "/missing.jpg"); },
                          {dir + "/missing.jpg", "no such file"}));
  EXPECT_TRUE(throws_with([&] { decode_image_file(dir); }, {dir, "is a directory"}));
  // > 512 MiB: a sparse file, refused from stat alone.
  const std::string huge = dir + "/huge.jpg";
  {
    FILE* f = std::fopen(huge.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("\xFF\xD8\xFF", f);
    std::fclose(f);
    ASSERT_EQ(truncate(huge.c_str(), (int64_t(512) << 20) + 1), 0);
  }
  EXPECT_TRUE(throws_with([&] { decode_image_file(huge); }, {huge, "512 MiB"}));
  unlink(huge.c_str());
  const std::string locked = dir + "/locked.jpg";
  {
    FILE* f = std::fopen(locked.c_str(), "wb");
    std::fputs("\xFF\xD8\xFF\xE0", f);
    std::fclose(f);
    chmod(locked.c_str(), 0);
  }
  if (geteuid() != 0) {
    EXPECT_TRUE(throws_with([&] { decode_image_file(locked); }, {locked, "permission denied"}));
  } else {
    std::printf("  (running as root: the EACCES case cannot be provoked, skipped)\n");
  }
  unlink(locked.c_str());
  rmdir(dir.c_str());
}

TEST(ImageErrors, SniffAndMemory) {
  auto sniff = [](const std::string& s) {
    return sniff_image_format(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(sniff(std::string("\xFF\xD8\xFF\xE0", 4)), "jpeg");
  EXPECT_EQ(sniff(std::string("\x89PNG\r\n\x1A\n", 8)), "png");
  EXPECT_EQ(sniff(std::string("RIFF\0\0\0\0WEBPVP8 ", 16)), "webp");
  EXPECT_EQ(sniff(std::string("RIFF\0\0\0\0WAVE", 12)), "unknown");
  EXPECT_EQ(sniff(std::string("II*\0", 4)), "tiff");
  EXPECT_EQ(sniff(std::string("MM\0*", 4)), "tiff");
  EXPECT_EQ(sniff("GIF89a"), "gif");
  EXPECT_EQ(sniff("BM...."), "bmp");
  EXPECT_EQ(sniff(std::string("\0\0\0\x18"
                              "ftypheic",
                              12)),
            "heic");
  EXPECT_EQ(sniff(std::string("\0\0\0\x18"
                              "ftypmif1",
                              12)),
            "heic");
  EXPECT_EQ(sniff(std::string("\xFF\x4F\xFF\x51", 4)), "jpeg2000");
  EXPECT_EQ(sniff(""), "unknown");
  EXPECT_EQ(sniff(std::string("\xFF\xD8", 2)), "unknown");
  const uint8_t junk[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00};
  EXPECT_TRUE(throws_with([&] { decode_image_memory(junk, sizeof junk, "mem.jpg"); },
                          {"mem.jpg: ", "JPEG"}));
  EXPECT_TRUE(
      throws_with([&] { decode_image_memory(junk, 0, "mem0.jpg"); }, {"mem0.jpg", "empty"}));
}

// ------------------------------------------------------------------------------------------
// Resize: closed-form checks
// ------------------------------------------------------------------------------------------
Image8 make_image(int64_t h, int64_t w, const std::vector<uint8_t>& rgb) {
  Image8 im;
  im.height = h, im.width = w, im.rgb = rgb;
  return im;
}

TEST(Resize, FilterNames) {
  EXPECT_STREQ(resize_filter_name(ResizeFilter::Bilinear), "bilinear");
  EXPECT_STREQ(resize_filter_name(ResizeFilter::Antialias), "antialias");
  EXPECT_EQ(parse_resize_filter("antialias"), ResizeFilter::Antialias);
  EXPECT_EQ(parse_resize_filter("bilinear"), ResizeFilter::Bilinear);
  EXPECT_TRUE(throws_with([] { parse_resize_filter("bicubic"); }, {"bicubic"}));
}

TEST(Resize, ConstantStaysConstant) {
  for (auto f : {ResizeFilter::Bilinear, ResizeFilter::Antialias})
    for (auto [h, w, oh, ow] : std::vector<std::array<int64_t, 4>>{{450, 600, 299, 299},
                                                                   {23, 37, 299, 299},
                                                                   {1024, 1024, 299, 299},
                                                                   {1, 1, 5, 7},
                                                                   {3000, 2000, 299, 299}}) {
      Image8 im = make_image(h, w, std::vector<uint8_t>(size_t(h * w * 3), 0));
      for (int64_t i = 0; i < h * w; ++i)
        im.rgb[size_t(3 * i)] = 200, im.rgb[size_t(3 * i + 1)] = 100, im.rgb[size_t(3 * i + 2)] = 7;
      std::vector<float> out(size_t(oh * ow * 3)), want(out.size());
      for (size_t i = 0; i < want.size(); i += 3)
        want[i] = 200 / 127.5f - 1, want[i + 1] = 100 / 127.5f - 1, want[i + 2] = 7 / 127.5f - 1;
      resize_to_unit_range_cpu(im, oh, ow, f, out.data());
      EXPECT_TRUE(tensors_close(out.data(), want.data(), int64_t(out.size()), 2e-6, 0,
                                std::string("constant ") + resize_filter_name(f)));
    }
}

TEST(Resize, Upsample2x2To4x4Bilinear) {
  // One channel 0 / 255 in x (left/right), another in y; 1-D taps at scale 1/2 are
  // [a, .75a + .25b, .25a + .75b, b], i.e. -1, -0.5, 0.5, 1 on [-1, 1].
  Image8 im = make_image(2, 2, {0, 0, 9, 255, 0, 9, 0, 255, 9, 255, 255, 9});
  std::vector<float> out(4 * 4 * 3);
  resize_to_unit_range_cpu(im, 4, 4, ResizeFilter::Bilinear, out.data());
  const float ramp[4] = {-1.f, -0.5f, 0.5f, 1.f};
  std::vector<float> want(out.size());
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      want[size_t((y * 4 + x) * 3)] = ramp[x];
      want[size_t((y * 4 + x) * 3 + 1)] = ramp[y];
      want[size_t((y * 4 + x) * 3 + 2)] = 9 / 127.5f - 1;
    }
  EXPECT_TRUE(tensors_close(out.data(), want.data(), 48, 1e-6, 0, "2x2 -> 4x4 bilinear"));
  // Antialias up-sampling: same triangle (support 1) with renormalised edges: equal here.
  resize_to_unit_range_cpu(im, 4, 4, ResizeFilter::Antialias, out.data());
  EXPECT_TRUE(tensors_close(out.data(), want.data(), 48, 1e-6, 0, "2x2 -> 4x4 antialias"));
}

TEST(Resize, IdentityWhenSizeUnchanged) {
  std::vector<uint8_t> px(31 * 17 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 37 + 11) % 256);
  Image8 im = make_image(31, 17, px);
  std::vector<float> want(px.size()), out(px.size());
  for (size_t i = 0; i < px.size(); ++i) want[i] = float(px[i] / 127.5 - 1.0);
  for (auto f : {ResizeFilter::Bilinear, ResizeFilter::Antialias}) {
    resize_to_unit_range_cpu(im, 31, 17, f, out.data());
    EXPECT_TRUE(tensors_close(out.data(), want.data(), int64_t(out.size()), 1e-6, 0,
                              std::string("identity ") + resize_filter_name(f)));
  }
}

TEST(Resize, BadArguments) {
  Image8 im = make_image(2, 2, std::vector<uint8_t>(12, 0));
  float out[12];
  EXPECT_THROW(resize_to_unit_range_cpu(im, 0, 2, ResizeFilter::Bilinear, out), Error);
  Image8 empty;
  EXPECT_THROW(resize_to_unit_range_cpu(empty, 2, 2, ResizeFilter::Bilinear, out), Error);
  im.rgb.resize(11);
  EXPECT_THROW(resize_to_unit_range_cpu(im, 2, 2, ResizeFilter::Bilinear, out), Error);
}

}  // namespace
}  // namespace engine
