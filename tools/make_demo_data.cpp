// tools/make_demo_data.cpp: seeded synthetic dermoscopy-like images for the demo and the tests,
// in the HAM10000 shape: 600x450 JPEG (q90), class folders benign/ and melanoma/ plus an
// ISIC-2016-style labels CSV. Benign lesions are round with an even border and one or two even
// browns; melanoma-like lesions are asymmetric with an irregular border, several colours and a
// blue-white veil. Both sit on varied skin tones with hair-like strokes and vignetting; lesion
// size, darkness and skin tone overlap between the classes, so no single global statistic
// (mean brightness, colour) separates them.
//   make_demo_data --out demo --count 300 --melanoma-fraction 0.2 --seed 1
#include <CLI/CLI.hpp>

#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

// jpeglib.h needs size_t and FILE declared first (the block above).
#include <jpeglib.h>

#include "engine/cli_status.h"
#include "engine/error.h"
#include "engine/progress.h"

namespace fs = std::filesystem;
using engine::fail;

namespace {

constexpr int W = 600, H = 450;

struct Rgb {
  float r, g, b;
};

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};

void write_jpeg(const std::string& path, const std::vector<uint8_t>& rgb, int quality) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(tmp, ": cannot create");
  jpeg_compress_struct c{};
  JpegError err{};
  c.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = [](j_common_ptr cinfo) {
    auto* e = reinterpret_cast<JpegError*>(cinfo->err);
    e->mgr.format_message(cinfo, e->msg);
    std::longjmp(e->jump, 1);
  };
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&c);
    std::fclose(f);
    fail(path, ": libjpeg jpeg_write_scanlines: ", err.msg);
  }
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = W, c.image_height = H, c.input_components = 3, c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb.data()) + static_cast<size_t>(c.next_scanline) * W * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  if (std::fclose(f) != 0) fail(tmp, ": write failed");
  fs::rename(tmp, path);
}

// One image. The lesion is a blob whose radius varies with angle; colour varies over it.
std::vector<uint8_t> make_lesion(std::mt19937_64& rng, bool melanoma) {
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> n01(0.f, 1.f);
  // Skin: light to medium tones (overlapping between classes).
  const float tone = u(rng);
  const Rgb skin{225 - 60 * tone + 6 * n01(rng), 185 - 65 * tone + 6 * n01(rng),
                 160 - 70 * tone + 6 * n01(rng)};
  const float cx = W / 2 + 40 * n01(rng), cy = H / 2 + 30 * n01(rng);
  const float radius = 60 + 60 * u(rng);  // same size range for both classes
  const float elong = 1 + 0.25f * u(rng), rot = 6.283f * u(rng);
  // Border harmonics: benign small and smooth; melanoma larger, higher-frequency, asymmetric.
  float amp[8] = {0}, ph[8];
  for (int k = 0; k < 8; ++k) ph[k] = 6.283f * u(rng);
  if (melanoma) {
    for (int k = 1; k < 8; ++k) amp[k] = (0.10f + 0.12f * u(rng)) / std::sqrt(float(k));
  } else {
    amp[2] = 0.04f * u(rng);
  }
  // Colours: benign one or two even browns; melanoma dark brown, black, red-brown, blue-grey veil.
  const float darkness = u(rng);  // overlapping darkness range
  const Rgb brown{140 - 60 * darkness, 90 - 45 * darkness, 60 - 35 * darkness};
  const Rgb brown2{brown.r * 0.8f, brown.g * 0.75f, brown.b * 0.75f};
  const Rgb black{50, 35, 30}, red{150, 70, 60}, veil{120, 135, 165};
  const bool two_tone = u(rng) < 0.5f;
  const float veil_x = cx + radius * 0.4f * n01(rng), veil_y = cy + radius * 0.4f * n01(rng);
  const float veil_r = radius * (0.3f + 0.3f * u(rng));
  const float f1 = 0.02f + 0.03f * u(rng), f2 = 0.02f + 0.03f * u(rng), p1 = 6.283f * u(rng);

  std::vector<float> img(static_cast<size_t>(W) * H * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float dx = x - cx, dy = y - cy;
      const float xr = (dx * std::cos(rot) + dy * std::sin(rot)) / elong;
      const float yr = -dx * std::sin(rot) + dy * std::cos(rot);
      const float ang = std::atan2(yr, xr);
      float border = 1;
      for (int k = 1; k < 8; ++k) border += amp[k] * std::sin(k * ang + ph[k]);
      const float d = std::hypot(xr, yr) / (radius * border);
      const float mask = std::clamp((1.08f - d) / 0.16f, 0.f, 1.f);  // soft edge
      Rgb c;
      if (melanoma) {
        const float t1 = 0.5f + 0.5f * std::sin(f1 * x + p1),
                    t2 = 0.5f + 0.5f * std::sin(f2 * y - p1);
        c = {brown.r * t1 + black.r * (1 - t1), brown.g * t1 + black.g * (1 - t1),
             brown.b * t1 + black.b * (1 - t1)};
        c = {c.r * t2 + red.r * (1 - t2) * 0.5f + c.r * (1 - t2) * 0.5f,
             c.g * t2 + red.g * (1 - t2) * 0.5f + c.g * (1 - t2) * 0.5f,
             c.b * t2 + red.b * (1 - t2) * 0.5f + c.b * (1 - t2) * 0.5f};
        const float v =
            std::clamp(1.2f - std::hypot(x - veil_x, y - veil_y) / veil_r, 0.f, 1.f) * 0.8f;
        c = {c.r * (1 - v) + veil.r * v, c.g * (1 - v) + veil.g * v, c.b * (1 - v) + veil.b * v};
      } else {
        const float t = two_tone ? std::clamp(1.3f - d * 1.6f, 0.f, 1.f) : 0.f;
        c = {brown.r * (1 - t) + brown2.r * t, brown.g * (1 - t) + brown2.g * t,
             brown.b * (1 - t) + brown2.b * t};
      }
      // Vignetting (dermoscope): darker towards the corners.
      const float vig =
          1 - 0.35f * std::pow(std::hypot((x - W / 2.f) / W, (y - H / 2.f) / H) * 1.6f, 2.f);
      float* px = &img[(static_cast<size_t>(y) * W + x) * 3];
      px[0] = (skin.r * (1 - mask) + c.r * mask) * vig;
      px[1] = (skin.g * (1 - mask) + c.g * mask) * vig;
      px[2] = (skin.b * (1 - mask) + c.b * mask) * vig;
    }
  // Hairs: dark thin curved strokes across the image.
  const int hairs = static_cast<int>(u(rng) * 12);
  for (int h = 0; h < hairs; ++h) {
    float x = u(rng) * W, y = u(rng) * H, a = 6.283f * u(rng);
    const float len = 150 + 300 * u(rng), curl = 0.002f * n01(rng), width = 0.8f + 1.2f * u(rng);
    for (float s = 0; s < len; s += 0.7f) {
      a += curl;
      x += std::cos(a) * 0.7f, y += std::sin(a) * 0.7f;
      for (int oy = -2; oy <= 2; ++oy)
        for (int ox = -2; ox <= 2; ++ox) {
          const int px = static_cast<int>(x) + ox, py = static_cast<int>(y) + oy;
          if (px < 0 || py < 0 || px >= W || py >= H) continue;
          const float w = std::clamp(width - std::hypot(float(ox), float(oy)), 0.f, 1.f) * 0.85f;
          float* p = &img[(static_cast<size_t>(py) * W + px) * 3];
          p[0] = p[0] * (1 - w) + 40 * w, p[1] = p[1] * (1 - w) + 30 * w,
          p[2] = p[2] * (1 - w) + 25 * w;
        }
    }
  }
  std::vector<uint8_t> out(img.size());
  for (size_t i = 0; i < img.size(); ++i)
    out[i] = static_cast<uint8_t>(std::clamp(img[i] + 2.5f * n01(rng), 0.f, 255.f));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Generate seeded synthetic dermoscopy-like images (600x450 JPEG) in class folders + ISIC "
      "CSV"};
  std::string out;
  int count = 300;
  double melanoma_fraction = 0.2;
  uint64_t seed = 1;
  app.add_option("--out", out, "output folder (created)")->required();
  app.add_option("--count", count, "number of images")->check(CLI::Range(2, 1000000));
  app.add_option("--melanoma-fraction", melanoma_fraction, "fraction of melanoma-like images")
      ->check(CLI::Range(0.01, 0.99));
  app.add_option("--seed", seed, "random seed");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return engine::cli_parse_error_status(app, e);  // --help: 0; a bad flag: one line, 2
  }
  try {
    fs::create_directories(fs::path(out) / "images" / "benign");
    fs::create_directories(fs::path(out) / "images" / "melanoma");
    const std::string csv_path = (fs::path(out) / "labels.csv").string();
    std::ofstream csv(csv_path + ".tmp");
    if (!csv) fail(csv_path, ": cannot write");
    csv << "image_id,benign_malignant\n";
    engine::Progress progress("make_demo_data", count);
    const int n_mel = std::max(1, static_cast<int>(std::lround(count * melanoma_fraction)));
    auto is_melanoma = [&](int i) {  // melanoma images spread evenly over the ids
      return (static_cast<int64_t>(i) * n_mel) / count !=
             (static_cast<int64_t>(i + 1) * n_mel) / count;
    };
    auto image_id = [](int i) {
      char id[32];
      std::snprintf(id, sizeof id, "ISIC_%07d", 9000000 + i);
      return std::string(id);
    };
    std::string error;
    // Each image has its own seeded stream: the set is the same for any thread count, and
    // --count N is a prefix of --count M > N. Existing files are kept (a rerun is cheap).
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < count; ++i) {
      try {
        const bool mel = is_melanoma(i);
        const fs::path p =
            fs::path(out) / "images" / (mel ? "melanoma" : "benign") / (image_id(i) + ".jpg");
        if (!fs::exists(p)) {
          std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i));
          write_jpeg(p.string(), make_lesion(rng, mel), 90);
        }
      } catch (const std::exception& e) {
#pragma omp critical
        error = e.what();
      }
#pragma omp critical
      progress.advance(1);
    }
    if (!error.empty()) fail(error);
    for (int i = 0; i < count; ++i)
      csv << image_id(i) << "," << (is_melanoma(i) ? "malignant" : "benign") << "\n";
    progress.finish();
    csv.close();
    fs::rename(csv_path + ".tmp", csv_path);
    std::printf(
        "demo data: %d images (%d melanoma-like) in %s/images/{benign,melanoma}, labels %s\n",
        count, n_mel, out.c_str(), csv_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
