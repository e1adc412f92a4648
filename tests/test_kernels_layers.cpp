// tests/test_kernels_layers.cpp: the layer kernels per device, from the case tables of
// tests/kernel_cases_layers.h (conv2d, pool2d, resize: CPU only) and tests/kernel_cases.h (dense)
// through the test body of tests/kernel_test.h. Cpu/<Family>Kernel.MatchesOracle/<case>: the CPU
// kernel (oneDNN conv, pools, sgemm dense, resize) against the independent references below
// (double-accumulating plain loops, resize taps from the filter definitions);
// Cuda/<Family>Kernel.MatchesOracle/<case>: the GPU twin (cuDNN conv in fp32/tf32/fp16 and both
// layouts, the pool/copy kernels of kernels/pool2d_cuda.h, cuBLAS dense) against the CPU kernel,
// skipped with the printed reason without a GPU. The PyTorch reference-file layer tests and the
// closed forms of these kernels are in tests/test_layers.cpp.
// Run: ctest -R 'Conv2dKernel|Pool2dKernel|DenseKernel|ResizeKernel' or
// build/tests/test_kernels_layers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/dense.h"
#include "kernels/pool2d.h"
#include "kernels/resize.h"
#include "tests/kernel_cases.h"
#include "tests/kernel_cases_layers.h"
#include "tests/kernel_test.h"

namespace engine::kernel_cases {

// conv2d_forward_ref_cpu: plain loops accumulating in double (kernels/conv2d.h), written apart
// from the oneDNN path it judges.
Outputs reference(const Conv2dCase& c, const Conv2d::Inputs& in) {
  Tensor y(c.y_shape());
  conv2d_forward_ref_cpu(in.x, in.w_hwio.data(), in.bias.data(), c.cout, c.spec, y);
  return {{"y", to_vector(y)}};
}

// Pools from the definition: TF padding, the average over the VALID cells of each window, in
// double; concat as an index copy; the global average as a double mean.
Outputs reference(const Pool2dCase& c, const Pool2d::Inputs& in) {
  const Shape ys = c.y_shape();
  std::vector<float> y(size_t(ys.numel()));
  if (c.op == PoolOp::Concat) {
    int64_t off = 0;
    for (const Tensor& t : in.x) {
      for (int64_t p = 0; p < c.n * c.h * c.w; ++p)
        for (int64_t ch = 0; ch < t.c(); ++ch)
          y[size_t(p * c.c + off + ch)] = t.data()[p * t.c() + ch];
      off += t.c();
    }
    return {{"y", y}};
  }
  const Tensor& x = in.x[0];
  if (c.op == PoolOp::GlobalAvg) {
    for (int64_t n = 0; n < c.n; ++n)
      for (int64_t ch = 0; ch < c.c; ++ch) {
        double s = 0;
        for (int64_t p = 0; p < c.h * c.w; ++p) s += x.data()[(n * c.h * c.w + p) * c.c + ch];
        y[size_t(n * c.c + ch)] = float(s / double(c.h * c.w));
      }
    return {{"y", y}};
  }
  const PadInfo ph = tf_padding(c.h, c.k, c.stride, c.pad),
                pw = tf_padding(c.w, c.k, c.stride, c.pad);
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t oh = 0; oh < ph.out; ++oh)
      for (int64_t ow = 0; ow < pw.out; ++ow)
        for (int64_t ch = 0; ch < c.c; ++ch) {
          double acc = c.op == PoolOp::Max ? -INFINITY : 0;
          int64_t count = 0;
          for (int64_t i = 0; i < c.k; ++i)
            for (int64_t j = 0; j < c.k; ++j) {
              const int64_t ih = oh * c.stride - ph.before + i, iw = ow * c.stride - pw.before + j;
              if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;  // padding is not data
              const double v = x.data()[((n * c.h + ih) * c.w + iw) * c.c + ch];
              acc = c.op == PoolOp::Max ? std::max(acc, v) : acc + v;
              ++count;
            }
          if (c.op == PoolOp::Avg) acc /= double(count);
          y[size_t(((n * ph.out + oh) * pw.out + ow) * c.c + ch)] = float(acc);
        }
  return {{"y", y}};
}

// y = x W + b in double.
Outputs reference(const DenseCase& c, const Dense::Inputs& in) {
  std::vector<float> y(size_t(c.n * c.out));
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t o = 0; o < c.out; ++o) {
      double s = in.b[size_t(o)];
      for (int64_t i = 0; i < c.in; ++i)
        s += double(in.x[size_t(n * c.in + i)]) * in.w[size_t(i * c.out + o)];
      y[size_t(n * c.out + o)] = float(s);
    }
  return {{"y", y}};
}

// One axis of a separable resize from the definitions, in double: (first input index, weights).
struct Taps {
  int64_t first = 0;
  std::vector<double> w;
};
std::vector<Taps> axis_taps(int64_t in, int64_t out, ResizeFilter f) {
  std::vector<Taps> t(static_cast<size_t>(out));
  const double scale = double(in) / double(out);
  for (int64_t o = 0; o < out; ++o) {
    Taps& a = t[size_t(o)];
    if (f == ResizeFilter::Antialias) {  // PIL: triangle of support max(scale, 1), renormalized
      const double support = std::max(scale, 1.0), ss = 1.0 / std::max(scale, 1.0);
      const double center = (double(o) + 0.5) * scale;
      const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
      const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), in);
      double sum = 0;
      a.first = lo;
      for (int64_t j = lo; j < hi; ++j) {
        a.w.push_back(std::max(0.0, 1.0 - std::fabs((double(j) - center + 0.5) * ss)));
        sum += a.w.back();
      }
      for (double& v : a.w) v /= sum;
      continue;
    }
    // Bilinear (torch, half-pixel centres, clamped at 0) or TF1 (src = dst * scale, no offset).
    double src = f == ResizeFilter::Tf1 ? double(o) * scale : (double(o) + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    const int64_t i0 = std::min<int64_t>(int64_t(std::floor(src)), in - 1);
    const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
    const double l = src - double(i0);
    a.first = i0;
    // At the clamped edge both taps are one pixel: one tap of weight 1 (a second, zero-weight tap
    // would read one pixel past the row, as ASan showed).
    a.w = i1 == i0 ? std::vector<double>{1.0} : std::vector<double>{1 - l, l};
  }
  return t;
}

Outputs reference(const ResizeCase& c, const Resize::Inputs& in) {
  const std::vector<Taps> ys = axis_taps(c.in_h, c.out_h, c.filter),
                          xs = axis_taps(c.in_w, c.out_w, c.filter);
  std::vector<float> y(size_t(c.out_h * c.out_w * 3));
  for (int64_t oy = 0; oy < c.out_h; ++oy)
    for (int64_t ox = 0; ox < c.out_w; ++ox)
      for (int ch = 0; ch < 3; ++ch) {
        const Taps &ty = ys[size_t(oy)], &tx = xs[size_t(ox)];
        double acc = 0;
        for (size_t i = 0; i < ty.w.size(); ++i)
          for (size_t j = 0; j < tx.w.size(); ++j)
            acc += ty.w[i] * tx.w[j] *
                   in.img.rgb[size_t(
                       ((ty.first + int64_t(i)) * c.in_w + tx.first + int64_t(j)) * 3 + ch)];
        y[size_t((oy * c.out_w + ox) * 3 + ch)] = float(acc / 127.5 - 1.0);
      }
  return {{"y", y}};
}

}  // namespace engine::kernel_cases

using namespace engine::kernel_cases;
ENGINE_KERNEL_TEST(Conv2dKernel, Conv2d);
ENGINE_KERNEL_TEST(Pool2dKernel, Pool2d);
ENGINE_KERNEL_TEST(DenseKernel, Dense);
ENGINE_KERNEL_TEST_CPU_ONLY(ResizeKernel, Resize);
