// bench/bench_decode.cpp: Google Benchmark of the per-image preprocessing on ONE thread: JPEG
// decode (engine/image_io.h) full-size and DCT-scaled (dct_min_side = 299), the resize to
// 299x299 in [-1, 1] (kernels/resize.h), and decode + resize together through preprocess_image
// (engine/preprocessing.h: what tools/extract and tools/predict run), in images/s. The two test
// JPEGs (600x450 and 1024x1024, q90, 4:2:0, ISIC's typical sizes) are compressed in-process with
// libjpeg from a deterministic synthetic "lesion" (the same formula as bench/torch_decode.py, which
// times PIL + torch on the same work), so no files are needed. Every variant is validated once
// (output size, values in [-1, 1]) before it is timed. Run: ./bench_decode
// [--benchmark_filter=1024]; compare with /usr/bin/python3 bench/torch_decode.py.
#include <benchmark/benchmark.h>
#include <jpeglib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"

namespace {

using namespace engine;

// Smooth skin background, dark irregular blob, a little integer texture: compresses like a
// dermoscopy photo (~0.9-1.2 bits/pixel at q90), unlike noise. Mirrored in torch_decode.py.
std::vector<uint8_t> synthetic_lesion(int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * size_t(h) * 3);
  const double skin[3] = {222, 172, 150}, lesion[3] = {95, 58, 42};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double u = (x - 0.5 * w) / (0.35 * w), v = (y - 0.5 * h) / (0.3 * h);
      const double edge = 1 + 0.12 * std::sin(3 * std::atan2(v, u));
      const double inside = 1 / (1 + std::exp((std::sqrt(u * u + v * v) - edge) * 12));
      const double s = 0.9 + 0.1 * std::sin(x * 0.013) * std::cos(y * 0.017);
      const double l = 0.8 + 0.3 * std::sin(x * 0.05 + y * 0.03);
      const int noise = int((int64_t(x) * 7919 + int64_t(y) * 104729) % 11) - 5;
      for (int c = 0; c < 3; ++c) {
        const double p = skin[c] * s * (1 - inside) + lesion[c] * l * inside + noise;
        rgb[(size_t(y) * w + x) * 3 + c] = uint8_t(std::lround(std::fmin(std::fmax(p, 0), 255)));
      }
    }
  return rgb;
}

// libjpeg defaults (as PIL's save): q90, 4:2:0, baseline Huffman tables, JFIF header.
std::vector<uint8_t> compress_jpeg(const std::vector<uint8_t>& rgb, int w, int h, int quality) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);  // exits on error: fine for a fixed, valid input
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb.data()) + size_t(c.next_scanline) * w * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

struct Sample {
  int w, h;
  std::vector<uint8_t> jpeg;
};

const Sample& sample(int side) {
  static const Sample s600 = [] {
    Sample s{600, 450, {}};
    s.jpeg = compress_jpeg(synthetic_lesion(s.w, s.h), s.w, s.h, 90);
    return s;
  }();
  static const Sample s1024 = [] {
    Sample s{1024, 1024, {}};
    s.jpeg = compress_jpeg(synthetic_lesion(s.w, s.h), s.w, s.h, 90);
    return s;
  }();
  return side == 600 ? s600 : s1024;
}

// tools/extract --resize f [--dct-scale].
Preprocessing preprocessing(ResizeFilter f, bool dct) { return Preprocessing::for_resize(f, dct); }

void validate(const Sample& s, bool dct, bool resize, ResizeFilter f) {
  const Preprocessing pre = preprocessing(f, dct);
  Image8 img = decode_image_memory(s.jpeg.data(), s.jpeg.size(), "bench", pre.decode_options());
  const int64_t want_w = dct && s.w == 1024 ? 512 : s.w;
  if (img.width != want_w) fail("bench: decoded width ", img.width, ", expected ", want_w);
  if (!resize) return;
  std::vector<float> out(size_t(pre.floats()));
  preprocess_image(s.jpeg, "bench", pre, out.data());
  for (float v : out)
    if (!(v >= -1.0001f && v <= 1.0001f)) fail("bench: resize output ", v, " outside [-1, 1]");
}

void set_counters(benchmark::State& st, const Sample& s) {
  st.counters["img/s"] = benchmark::Counter(double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["MP/s"] =
      benchmark::Counter(double(st.iterations()) * s.w * s.h / 1e6, benchmark::Counter::kIsRate);
  st.SetLabel(std::to_string(s.jpeg.size() / 1024) + " KiB JPEG");
}

void BM_Decode(benchmark::State& st, int side, bool dct) {
  const Sample& s = sample(side);
  validate(s, dct, false, ResizeFilter::Antialias);
  const DecodeOptions o = preprocessing(ResizeFilter::Antialias, dct).decode_options();
  for (auto _ : st) {
    Image8 img = decode_image_memory(s.jpeg.data(), s.jpeg.size(), "bench", o);
    benchmark::DoNotOptimize(img.rgb.data());
  }
  set_counters(st, s);
}

void BM_DecodeResize(benchmark::State& st, int side, bool dct, ResizeFilter f) {
  const Sample& s = sample(side);
  validate(s, dct, true, f);
  const Preprocessing pre = preprocessing(f, dct);
  std::vector<float> out(size_t(pre.floats()));
  for (auto _ : st) {
    preprocess_image(s.jpeg, "bench", pre, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, s);
}

void BM_ResizeOnly(benchmark::State& st, int side, bool dct, ResizeFilter f) {
  const Sample& s = sample(side);
  validate(s, dct, true, f);
  const Preprocessing pre = preprocessing(f, dct);
  Image8 img = decode_image_memory(s.jpeg.data(), s.jpeg.size(), "bench", pre.decode_options());
  std::vector<float> out(size_t(pre.floats()));
  for (auto _ : st) {
    preprocess_image(img, pre, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, s);
}

// Registered in the order they print; names say the JPEG size, the decode (full or DCT-scaled to
// >= 299) and the resize filter, e.g. BM_DecodeResize/600x450_dct299_antialias.
const int kRegistered = [] {
  constexpr auto AA = ResizeFilter::Antialias;
  constexpr auto BL = ResizeFilter::Bilinear;
  auto size = [](int side) { return std::string(side == 600 ? "600x450" : "1024x1024"); };
  auto decode = [](bool dct) { return std::string(dct ? "_dct299" : "_full"); };
  auto filter = [](ResizeFilter f) { return std::string(f == AA ? "_antialias" : "_bilinear"); };
  auto add = [](const std::string& name, auto fn, auto... args) {
    benchmark::RegisterBenchmark(name.c_str(), fn, args...)->Unit(benchmark::kMillisecond);
  };
  for (int side : {600, 1024})
    for (bool dct : {false, true})
      add("BM_Decode/" + size(side) + decode(dct), BM_Decode, side, dct);
  for (int side : {600, 1024})
    for (ResizeFilter f : {AA, BL})
      add("BM_ResizeOnly/" + size(side) + filter(f), BM_ResizeOnly, side, false, f);
  for (int side : {600, 1024})
    for (bool dct : {false, true})
      add("BM_DecodeResize/" + size(side) + decode(dct) + filter(AA), BM_DecodeResize, side, dct,
          AA);
  add("BM_DecodeResize/" + size(1024) + decode(false) + filter(BL), BM_DecodeResize, 1024, false,
      BL);
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
