// kernels/pool2d_cpu.cpp: CPU max/average pooling with TF 'same'/'valid' semantics, channel concat
// and global average pooling, NHWC. These are both the reference and the production versions
// (pooling is memory-bound and cheap next to the convs): OpenMP over N*Ho rows, and every inner
// loop runs over the contiguous C channels of one pixel so the compiler vectorises it.
// Declared in kernels/pool2d.h; tested by tests/test_layers.cpp, timed by bench/bench_layers.cpp.
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "kernels/pool2d.h"

namespace engine {

Shape pool2d_output_shape(const Shape& x, int k, int stride, Padding p) {
  ENGINE_CHECK(x.rank() == 4, "pool2d: input must be NHWC rank 4, got ", x.str());
  PadInfo ph = tf_padding(x[1], k, stride, p);
  PadInfo pw = tf_padding(x[2], k, stride, p);
  return Shape{x[0], ph.out, pw.out, x[3]};
}

namespace {

enum class PoolKind { Max, Avg };

void pool2d_forward_cpu(const Tensor& x, int k, int stride, Padding p, Tensor& y, PoolKind kind) {
  const char* what = kind == PoolKind::Max ? "max_pool2d" : "avg_pool2d";
  const Shape ys = pool2d_output_shape(x.shape(), k, stride, p);
  ENGINE_CHECK(y.shape() == ys, what, ": output shape ", y.shape().str(), ", expected ", ys.str(),
               " for input ", x.shape().str());
  const int64_t N = x.n(), H = x.h(), W = x.w(), C = x.c(), Ho = ys[1], Wo = ys[2];
  const PadInfo ph = tf_padding(H, k, stride, p);
  const PadInfo pw = tf_padding(W, k, stride, p);
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t nh = 0; nh < N * Ho; ++nh) {
    const int64_t n = nh / Ho, oh = nh % Ho;
    // Clip the window to the input: padding cells are skipped, never read as 0 or -inf, so the
    // max ignores them and the average divides by the number of valid cells (TF semantics).
    const int64_t h0 = std::max<int64_t>(oh * stride - ph.before, 0);
    const int64_t h1 = std::min<int64_t>(oh * stride - ph.before + k, H);
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const int64_t w0 = std::max<int64_t>(ow * stride - pw.before, 0);
      const int64_t w1 = std::min<int64_t>(ow * stride - pw.before + k, W);
      float* __restrict yr = yp + ((n * Ho + oh) * Wo + ow) * C;
      // The first valid cell initialises the row; 'same' windows always hold one (pad < k).
      std::memcpy(yr, xp + ((n * H + h0) * W + w0) * C, sizeof(float) * C);
      for (int64_t ih = h0; ih < h1; ++ih)
        for (int64_t iw = (ih == h0 ? w0 + 1 : w0); iw < w1; ++iw) {
          const float* __restrict xr = xp + ((n * H + ih) * W + iw) * C;
          if (kind == PoolKind::Max)
            for (int64_t c = 0; c < C; ++c) yr[c] = std::max(yr[c], xr[c]);
          else
            for (int64_t c = 0; c < C; ++c) yr[c] += xr[c];
        }
      if (kind == PoolKind::Avg) {
        const float inv = 1.f / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t c = 0; c < C; ++c) yr[c] *= inv;
      }
    }
  }
}

}  // namespace

void max_pool2d_forward_cpu(const Tensor& x, int k, int stride, Padding p, Tensor& y) {
  pool2d_forward_cpu(x, k, stride, p, y, PoolKind::Max);
}

void avg_pool2d_forward_cpu(const Tensor& x, int k, int stride, Padding p, Tensor& y) {
  pool2d_forward_cpu(x, k, stride, p, y, PoolKind::Avg);
}

void concat_channels_cpu(const std::vector<const Tensor*>& xs, Tensor& y) {
  ENGINE_CHECK(!xs.empty(), "concat_channels: no inputs");
  ENGINE_CHECK(y.rank() == 4, "concat_channels: output must be NHWC rank 4, got ", y.shape().str());
  int64_t ctot = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = *xs[i];
    ENGINE_CHECK(t.rank() == 4 && t.n() == y.n() && t.h() == y.h() && t.w() == y.w(),
                 "concat_channels: input ", i, " shape ", t.shape().str(),
                 " does not match output N,H,W of ", y.shape().str());
    ctot += t.c();
  }
  ENGINE_CHECK(ctot == y.c(), "concat_channels: inputs hold ", ctot, " channels, output ", y.c());
  const int64_t P = y.n() * y.h() * y.w();
  float* yp = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t px = 0; px < P; ++px) {
    float* yr = yp + px * ctot;
    for (const Tensor* t : xs) {
      const int64_t c = t->c();
      std::memcpy(yr, t->data() + px * c, sizeof(float) * c);
      yr += c;
    }
  }
}

void global_avg_pool_cpu(const Tensor& x, Tensor& y) {
  ENGINE_CHECK(x.rank() == 4, "global_avg_pool: input must be NHWC rank 4, got ", x.shape().str());
  const Shape ys{x.n(), x.c()};
  ENGINE_CHECK(y.shape() == ys, "global_avg_pool: output shape ", y.shape().str(), ", expected ",
               ys.str());
  const int64_t N = x.n(), HW = x.h() * x.w(), C = x.c();
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel
  {
    // Double sums: 8x8 = 64 terms (or many more on larger inputs) cost nothing extra here and
    // keep the bottleneck features the head trains on independent of summation order.
    std::vector<double> acc(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t p = 0; p < HW; ++p) {
        const float* xr = xp + (n * HW + p) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += xr[c];
      }
      for (int64_t c = 0; c < C; ++c) yp[n * C + c] = static_cast<float>(acc[c] / HW);
    }
  }
}

}  // namespace engine
