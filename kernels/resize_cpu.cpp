// kernels/resize_cpu.cpp: RGB8 -> float [-1, 1] resize on the CPU. Tf1: TF's legacy
// resize_bilinear, bit-exact (resize_tf1_cpu below). Bilinear and Antialias match
// torch.nn.functional.interpolate(x.float(), size, mode='bilinear', align_corners=False,
// antialias=False|True) / 127.5 - 1 (torch 1.13; tests/test_image_io.cpp checks against float64
// references to ~1e-5). Separable: the taps (first source index, count, weights) of every output
// row and column are computed once per call in double, then each output row is made in two
// passes that stay in L1/L2: a vertical pass accumulates the needed source rows into one float
// row of in_w * 3 values (contiguous, vectorised by the compiler, uint8 -> float on the fly), and
// a horizontal pass applies the column taps to it. Vertical-first keeps the heavy pass (it touches
// in_w columns) on contiguous memory; the result equals torch's horizontal-first order up to
// float rounding. The 1/127.5 scale is folded into the vertical weights. No OpenMP: it runs inside
// the decode worker threads, one image per thread. Thread-safe: no shared state.
#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "engine/error.h"
#include "kernels/resize.h"

namespace engine {
namespace {

// Taps of one axis: output i reads source indices start[i] .. start[i] + count[i] - 1 with weights
// w[i * stride .. i * stride + count[i] - 1].
struct AxisTaps {
  std::vector<int32_t> start, count;
  std::vector<float> w;
  int stride = 0;
};

// Drops zero-weight taps at both ends and stores the rest; `gain` multiplies every weight.
void push_taps(AxisTaps& t, int64_t i, int64_t first, const std::vector<double>& w, double gain) {
  size_t lo = 0, hi = w.size();
  while (hi > lo + 1 && w[hi - 1] == 0.0) --hi;
  while (lo + 1 < hi && w[lo] == 0.0) ++lo;
  t.start[size_t(i)] = int32_t(first + int64_t(lo));
  t.count[size_t(i)] = int32_t(hi - lo);
  float* dst = t.w.data() + size_t(i) * size_t(t.stride);
  for (size_t k = lo; k < hi; ++k) dst[k - lo] = float(w[k] * gain);
}

// torch's upsample_bilinear2d (align_corners=False): src = (dst + 0.5) * in/out - 0.5, clamped
// at 0 below; the right neighbour is clamped to the last pixel.
AxisTaps bilinear_taps(int64_t in, int64_t out, double gain) {
  AxisTaps t;
  t.stride = 2;
  t.start.resize(size_t(out));
  t.count.resize(size_t(out));
  t.w.assign(size_t(out) * 2, 0.f);
  const double scale = double(in) / double(out);
  std::vector<double> w(2);
  for (int64_t i = 0; i < out; ++i) {
    double src = (double(i) + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    const int64_t i0 = std::min<int64_t>(int64_t(src), in - 1);
    const double l1 = src - double(i0);
    if (i0 + 1 < in) {
      w[0] = 1.0 - l1, w[1] = l1;
      push_taps(t, i, i0, w, gain);
    } else {
      push_taps(t, i, i0, std::vector<double>{1.0}, gain);
    }
  }
  return t;
}

// torch's _upsample_bilinear2d_aa (the PIL algorithm in float): triangle filter, support
// max(scale, 1), taps [int(center - support + 0.5), int(center + support + 0.5)) clipped to the
// image, weights normalised to sum 1 per output.
AxisTaps antialias_taps(int64_t in, int64_t out, double gain) {
  const double scale = double(in) / double(out);
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  AxisTaps t;
  t.stride = int(std::ceil(support)) * 2 + 1;
  t.start.resize(size_t(out));
  t.count.resize(size_t(out));
  t.w.assign(size_t(out) * size_t(t.stride), 0.f);
  std::vector<double> w;
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (double(i) + 0.5);
    const int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(int64_t(center + support + 0.5), in);
    w.assign(size_t(std::max<int64_t>(xmax - xmin, 1)), 0.0);
    double total = 0;
    for (int64_t j = 0; j < xmax - xmin; ++j) {
      const double x = std::fabs((double(j + xmin) - center + 0.5) * invscale);
      w[size_t(j)] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[size_t(j)];
    }
    ENGINE_CHECK(total > 0 && int64_t(w.size()) <= t.stride, "antialias resize ", in, " -> ", out,
                 ": no taps for output ", i);
    for (double& v : w) v /= total;
    push_taps(t, i, xmin, w, gain);
  }
  return t;
}

// TF1 legacy bilinear (tensorflow/core/kernels/image/resize_bilinear_op.cc, LegacyScaler): all in
// float, as TF computes it. No FMA contraction here (-march=native would fuse a + (b - a) * t),
// since TF's kernel rounds the product and the sum separately.
struct Tf1Axis {
  std::vector<int64_t> lower, upper;
  std::vector<float> lerp;
};

#if defined(__clang__)
#define ENGINE_NO_FP_CONTRACT
#elif defined(__GNUC__)
#define ENGINE_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define ENGINE_NO_FP_CONTRACT
#endif

ENGINE_NO_FP_CONTRACT Tf1Axis tf1_axis(int64_t in, int64_t out) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  Tf1Axis a;
  a.lower.resize(size_t(out));
  a.upper.resize(size_t(out));
  a.lerp.resize(size_t(out));
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < out; ++i) {
    const float src = static_cast<float>(i) * scale;
    const float src_f = std::floor(src);
    a.lower[size_t(i)] = std::max<int64_t>(static_cast<int64_t>(src_f), 0);
    a.upper[size_t(i)] = std::min<int64_t>(static_cast<int64_t>(std::ceil(src)), in - 1);
    a.lerp[size_t(i)] = src - src_f;
  }
  return a;
}

// top = tl + (tr - tl) * xl; bottom = bl + (br - bl) * xl; v = top + (bottom - top) * yl; then
// Keras' x / 127.5 - 1. TF returns the input cast to float when the size does not change; the
// formula gives the same values then (all lerps 0, lower = upper = i).
ENGINE_NO_FP_CONTRACT void resize_tf1_cpu(const Image8& img, int64_t out_h, int64_t out_w,
                                          float* out) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const Tf1Axis ys = tf1_axis(img.height, out_h), xs = tf1_axis(img.width, out_w);
  const int64_t row = img.width * 3;
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const uint8_t* top_row = img.rgb.data() + ys.lower[size_t(oy)] * row;
    const uint8_t* bot_row = img.rgb.data() + ys.upper[size_t(oy)] * row;
    const float yl = ys.lerp[size_t(oy)];
    float* o = out + oy * out_w * 3;
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const int64_t l = xs.lower[size_t(ox)] * 3, u = xs.upper[size_t(ox)] * 3;
      const float xl = xs.lerp[size_t(ox)];
      for (int c = 0; c < 3; ++c) {
        const float tl = top_row[l + c], tr = top_row[u + c];
        const float bl = bot_row[l + c], br = bot_row[u + c];
        const float top = tl + (tr - tl) * xl;
        const float bottom = bl + (br - bl) * xl;
        const float v = top + (bottom - top) * yl;
        o[3 * ox + c] = v / 127.5f - 1.0f;
      }
    }
  }
}

AxisTaps make_taps(ResizeFilter f, int64_t in, int64_t out, double gain) {
  return f == ResizeFilter::Bilinear ? bilinear_taps(in, out, gain) : antialias_taps(in, out, gain);
}

// acc[0 .. n) = sum_k w[k] * rows[k][0 .. n) for uint8 rows; contiguous, so it vectorises.
void vertical_pass(const uint8_t* src, int64_t row_stride, int first, int count, const float* w,
                   int64_t n, float* __restrict acc) {
  const uint8_t* r0 = src + int64_t(first) * row_stride;
  const float w0 = w[0];
  for (int64_t x = 0; x < n; ++x) acc[x] = w0 * float(r0[x]);
  for (int k = 1; k < count; ++k) {
    const uint8_t* __restrict r = src + int64_t(first + k) * row_stride;
    const float wk = w[k];
    for (int64_t x = 0; x < n; ++x) acc[x] += wk * float(r[x]);
  }
}

// out[ox, c] = sum_k w[k] * acc[start + k, c] - 1 for RGB triplets. With SSE each tap is one
// 4-wide multiply-add over (R, G, B, next R) instead of three scalar ones; the 4th lane is junk
// and is overwritten by the next pixel's store (acc carries one float of padding; the row's last
// pixel is stored lane by lane so nothing is written past the row).
void horizontal_pass(const float* __restrict acc, const AxisTaps& t, int64_t out_w,
                     float* __restrict out) {
#if defined(__SSE2__)
  const __m128 one = _mm_set1_ps(1.f);
  for (int64_t ox = 0; ox < out_w; ++ox) {
    const float* a = acc + int64_t(t.start[size_t(ox)]) * 3;
    const float* w = t.w.data() + ox * t.stride;
    const int n = t.count[size_t(ox)];
    __m128 s = _mm_setzero_ps();
    for (int k = 0; k < n; ++k)
      s = _mm_add_ps(s, _mm_mul_ps(_mm_set1_ps(w[k]), _mm_loadu_ps(a + 3 * k)));
    s = _mm_sub_ps(s, one);
    if (ox + 1 < out_w) {
      _mm_storeu_ps(out + 3 * ox, s);
    } else {
      alignas(16) float v[4];
      _mm_store_ps(v, s);
      out[3 * ox] = v[0], out[3 * ox + 1] = v[1], out[3 * ox + 2] = v[2];
    }
  }
#else
  for (int64_t ox = 0; ox < out_w; ++ox) {
    const float* a = acc + int64_t(t.start[size_t(ox)]) * 3;
    const float* w = t.w.data() + ox * t.stride;
    const int n = t.count[size_t(ox)];
    float s0 = 0.f, s1 = 0.f, s2 = 0.f;
    for (int k = 0; k < n; ++k) {
      const float wk = w[k];
      s0 += wk * a[3 * k];
      s1 += wk * a[3 * k + 1];
      s2 += wk * a[3 * k + 2];
    }
    out[3 * ox] = s0 - 1.f;
    out[3 * ox + 1] = s1 - 1.f;
    out[3 * ox + 2] = s2 - 1.f;
  }
#endif
}

}  // namespace

const char* resize_filter_name(ResizeFilter f) {
  switch (f) {
    case ResizeFilter::Bilinear: return "bilinear";
    case ResizeFilter::Antialias: return "antialias";
    case ResizeFilter::Tf1: return "tf1";
  }
  fail("invalid ResizeFilter value ", int(f));
}

ResizeFilter parse_resize_filter(const std::string& name) {
  if (name == "bilinear") return ResizeFilter::Bilinear;
  if (name == "antialias") return ResizeFilter::Antialias;
  if (name == "tf1") return ResizeFilter::Tf1;
  fail("unknown resize filter '", name, "' (expected 'antialias', 'bilinear' or 'tf1')");
}

DecodeOptions decode_options_for(ResizeFilter f, DecodeOptions base) {
  if (f == ResizeFilter::Tf1) {
    base.jpeg_flavor = DecodeOptions::JpegFlavor::TensorFlow;
    base.apply_exif_orientation = false;
    base.dct_min_side = 0;
  }
  return base;
}

void resize_to_unit_range_cpu(const Image8& img, int64_t out_h, int64_t out_w, ResizeFilter filter,
                              float* out) {
  ENGINE_CHECK(img.height > 0 && img.width > 0, "resize of an empty image (", img.height, " x ",
               img.width, ")");
  ENGINE_CHECK(int64_t(img.rgb.size()) == img.height * img.width * 3, "Image8 has ", img.rgb.size(),
               " bytes for ", img.height, " x ", img.width, " x 3");
  ENGINE_CHECK(out_h > 0 && out_w > 0, "resize to ", out_h, " x ", out_w);
  ENGINE_CHECK(img.height < (int64_t(1) << 30) && img.width < (int64_t(1) << 30),
               "image too large for resize: ", img.height, " x ", img.width);
  if (filter == ResizeFilter::Tf1) return resize_tf1_cpu(img, out_h, out_w, out);
  // Weights sum to 1 per output, so the unit-range scale can ride on the vertical weights.
  const AxisTaps ty = make_taps(filter, img.height, out_h, 1.0 / 127.5);
  const AxisTaps tx = make_taps(filter, img.width, out_w, 1.0);
  const int64_t n = img.width * 3;
  std::vector<float> acc(static_cast<size_t>(n) + 1, 0.f);  // +1: see horizontal_pass
  for (int64_t oy = 0; oy < out_h; ++oy) {
    vertical_pass(img.rgb.data(), n, ty.start[size_t(oy)], ty.count[size_t(oy)],
                  ty.w.data() + oy * ty.stride, n, acc.data());
    horizontal_pass(acc.data(), tx, out_w, out + oy * out_w * 3);
  }
}

}  // namespace engine
