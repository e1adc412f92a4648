// kernels/conv2d_cpu.cpp: CPU convolution: TF padding arithmetic, batch-norm folding, the
// plain-loop reference conv2d_forward_ref_cpu (double accumulation, the yardstick for every other
// conv) and Conv2dCpu, the production path through oneDNN (NHWC f32 activations, blocked weights
// reordered once, one primitive + scratchpad per input shape, fused bias + ReLU). Declared in
// kernels/conv2d.h; tested by tests/test_layers.cpp against PyTorch, timed by
// bench/bench_layers.cpp. ENGINE_CONV_VERBOSE=1 prints the oneDNN implementation picked per layer
// and shape (expect brgconv / brgconv_1x1 :avx512_core on the dev box; never a 'ref' one).
#include <omp.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "engine/error.h"
#include "kernels/conv2d.h"
#include "kernels/dnnl_context.h"

namespace engine {

const char* padding_name(Padding p) { return p == Padding::Same ? "same" : "valid"; }

PadInfo tf_padding(int64_t in, int64_t k, int64_t stride, Padding p) {
  ENGINE_CHECK(in >= 1 && k >= 1 && stride >= 1, "tf_padding: bad arguments in=", in, " k=", k,
               " stride=", stride);
  if (p == Padding::Valid) {
    ENGINE_CHECK(in >= k, "tf_padding: 'valid' window ", k, " larger than input ", in);
    return {(in - k) / stride + 1, 0, 0};
  }
  int64_t out = (in + stride - 1) / stride;
  int64_t total = std::max<int64_t>((out - 1) * stride + k - in, 0);
  // TF puts the odd pixel after (bottom/right), unlike a symmetric torch padding.
  return {out, total / 2, total - total / 2};
}

Shape conv2d_output_shape(const Shape& x, int64_t cout, const Conv2dSpec& spec) {
  ENGINE_CHECK(x.rank() == 4, "conv2d: input must be NHWC rank 4, got ", x.str());
  PadInfo ph = tf_padding(x[1], spec.kh, spec.stride, spec.padding);
  PadInfo pw = tf_padding(x[2], spec.kw, spec.stride, spec.padding);
  return Shape{x[0], ph.out, pw.out, cout};
}

void fold_batch_norm(std::vector<float>& w_hwio, int64_t cout, const float* beta, const float* mean,
                     const float* var, float eps, std::vector<float>& bias) {
  ENGINE_CHECK(cout > 0 && w_hwio.size() % static_cast<size_t>(cout) == 0,
               "fold_batch_norm: weight size ", w_hwio.size(), " not a multiple of cout ", cout);
  // Scale computed in double so the folded fp32 weight is the correctly rounded product.
  std::vector<double> scale(static_cast<size_t>(cout));
  bias.assign(static_cast<size_t>(cout), 0.f);
  for (int64_t o = 0; o < cout; ++o) {
    ENGINE_CHECK(var[o] + eps > 0, "fold_batch_norm: variance + eps <= 0 at channel ", o);
    scale[o] = 1.0 / std::sqrt(static_cast<double>(var[o]) + eps);
    bias[o] = static_cast<float>(static_cast<double>(beta[o]) - mean[o] * scale[o]);
  }
  const size_t rows = w_hwio.size() / static_cast<size_t>(cout);
  for (size_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < cout; ++o) {
      float& w = w_hwio[r * cout + o];
      w = static_cast<float>(w * scale[o]);
    }
}

void conv2d_forward_ref_cpu(const Tensor& x, const float* w_hwio, const float* bias, int64_t cout,
                            const Conv2dSpec& spec, Tensor& y) {
  const Shape ys = conv2d_output_shape(x.shape(), cout, spec);
  ENGINE_CHECK(y.shape() == ys, "conv2d_forward_ref_cpu: y shape ", y.shape().str(), ", expected ",
               ys.str());
  const int64_t N = x.n(), H = x.h(), W = x.w(), C = x.c(), Ho = ys[1], Wo = ys[2];
  const PadInfo ph = tf_padding(H, spec.kh, spec.stride, spec.padding);
  const PadInfo pw = tf_padding(W, spec.kw, spec.stride, spec.padding);
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel
  {
    // Double accumulators over cout: the inner loop runs over contiguous output channels of one
    // (ky,kx,ci) weight row, so it vectorises and the result is float64-accurate.
    std::vector<double> acc(static_cast<size_t>(cout));
#pragma omp for schedule(static)
    for (int64_t nh = 0; nh < N * Ho; ++nh) {
      const int64_t n = nh / Ho, oh = nh % Ho;
      for (int64_t ow = 0; ow < Wo; ++ow) {
        for (int64_t o = 0; o < cout; ++o) acc[o] = bias ? bias[o] : 0.0;
        for (int ky = 0; ky < spec.kh; ++ky) {
          const int64_t ih = oh * spec.stride - ph.before + ky;
          if (ih < 0 || ih >= H) continue;
          for (int kx = 0; kx < spec.kw; ++kx) {
            const int64_t iw = ow * spec.stride - pw.before + kx;
            if (iw < 0 || iw >= W) continue;
            const float* xr = xp + ((n * H + ih) * W + iw) * C;
            const float* wr = w_hwio + (static_cast<int64_t>(ky) * spec.kw + kx) * C * cout;
            for (int64_t ci = 0; ci < C; ++ci) {
              const double xv = xr[ci];
              const float* wc = wr + ci * cout;
              for (int64_t o = 0; o < cout; ++o) acc[o] += xv * wc[o];
            }
          }
        }
        float* yr = yp + ((n * Ho + oh) * Wo + ow) * cout;
        for (int64_t o = 0; o < cout; ++o) {
          double v = acc[o];
          if (spec.relu && v < 0) v = 0;
          yr[o] = static_cast<float>(v);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// oneDNN path.

// One engine for the whole process: creating one per layer would multiply the JIT caches and
// thread pools for nothing. One stream per calling thread: the models may run one image per
// core, each thread executing single-threaded primitives (oneDNN runs nested OpenMP calls on the
// calling thread). Declared in kernels/dnnl_context.h.
dnnl::engine& dnnl_cpu_engine() {
  static dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  return eng;
}
dnnl::stream& dnnl_thread_stream() {
  thread_local dnnl::stream strm{dnnl_cpu_engine()};
  return strm;
}

namespace {

// Which primitive/scratchpad set a call uses: 0 outside OpenMP parallel regions (primitives use
// every thread), 1 + thread number inside one (primitives run on that thread alone).
int64_t execution_slot() { return omp_in_parallel() ? 1 + omp_get_thread_num() : 0; }

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

}  // namespace

struct Conv2dCpu::Impl {
  struct Entry {
    dnnl::convolution_forward prim;
    dnnl::memory::desc src_md, dst_md;
    dnnl::memory weights;     // the blocked weights this primitive wants (usually shared)
    dnnl::memory scratchpad;  // allocated once per shape, not by oneDNN on every call
  };
  dnnl::memory weights;  // reordered once in the constructor to the layout oneDNN picked
  dnnl::memory bias;
  std::vector<float> bias_data;
  dnnl::primitive_attr attr;
  // Keyed by input N, H, W and execution slot; std::map keeps references to entries valid while
  // other threads insert, so only lookup and insertion hold the mutex.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, Entry> cache;
  std::mutex mu;
};

namespace {

dnnl::convolution_forward::primitive_desc make_conv_pd(const Conv2dSpec& spec, int64_t cin,
                                                       int64_t cout, int64_t N, int64_t H,
                                                       int64_t W,
                                                       const dnnl::primitive_attr& attr) {
  const PadInfo ph = tf_padding(H, spec.kh, spec.stride, spec.padding);
  const PadInfo pw = tf_padding(W, spec.kw, spec.stride, spec.padding);
  dnnl::memory::desc src_md({N, cin, H, W}, dt::f32, tag::nhwc);
  dnnl::memory::desc dst_md({N, cout, ph.out, pw.out}, dt::f32, tag::nhwc);
  // 'any' lets oneDNN pick the blocked weight layout its JIT kernel streams best.
  dnnl::memory::desc w_md({cout, cin, spec.kh, spec.kw}, dt::f32, tag::any);
  dnnl::memory::desc b_md({cout}, dt::f32, tag::x);
  dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md, w_md, b_md,
      dst_md, {spec.stride, spec.stride}, {ph.before, pw.before}, {ph.after, pw.after});
  return dnnl::convolution_forward::primitive_desc(d, attr, dnnl_cpu_engine());
}

// A nominal spatial size for the constructor's weight reorder; real shapes reuse the layout when
// oneDNN picks the same one (it depends on channels and ISA, rarely on H, W).
int64_t nominal_size(const Conv2dSpec& spec) { return std::max(spec.kh, spec.kw) + 16; }

}  // namespace

Conv2dCpu::Conv2dCpu(std::string name, const std::vector<float>& w_hwio,
                     const std::vector<float>& bias, int64_t cin, int64_t cout,
                     const Conv2dSpec& spec)
    : name_(std::move(name)), cin_(cin), cout_(cout), spec_(spec), impl_(std::make_unique<Impl>()) {
  ENGINE_CHECK(cin > 0 && cout > 0 && spec.kh > 0 && spec.kw > 0 && spec.stride > 0, "conv2d '",
               name_, "': bad spec cin=", cin, " cout=", cout, " k=", spec.kh, "x", spec.kw,
               " stride=", spec.stride);
  const size_t wn = static_cast<size_t>(spec.kh) * spec.kw * cin * cout;
  ENGINE_CHECK(w_hwio.size() == wn, "conv2d '", name_, "': weights hold ", w_hwio.size(),
               " floats, expected kh*kw*cin*cout = ", wn);
  ENGINE_CHECK(bias.empty() || bias.size() == static_cast<size_t>(cout), "conv2d '", name_,
               "': bias holds ", bias.size(), " floats, expected ", cout);
  Impl& im = *impl_;
  im.bias_data = bias.empty() ? std::vector<float>(static_cast<size_t>(cout), 0.f) : bias;
  dnnl_checked("conv2d", name_, "primitive setup", [&] {
    // strict: no silent bf16/tf32 down-conversion on AMX/avx512_bf16 machines.
    im.attr.set_fpmath_mode(dnnl::fpmath_mode::strict);
    im.attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (spec.relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      im.attr.set_post_ops(ops);
    }
    im.bias = dnnl::memory({{cout}, dt::f32, tag::x}, dnnl_cpu_engine(), im.bias_data.data());
    const int64_t s = nominal_size(spec);
    auto pd = make_conv_pd(spec, cin, cout, 1, s, s, im.attr);
    // Keras hwio == oneDNN's hwio tag over dims {cout, cin, kh, kw}.
    dnnl::memory user_w({{cout, cin, spec.kh, spec.kw}, dt::f32, tag::hwio}, dnnl_cpu_engine(),
                        const_cast<float*>(w_hwio.data()));
    im.weights = dnnl::memory(pd.weights_desc(), dnnl_cpu_engine());
    dnnl::reorder(user_w, im.weights).execute(dnnl_thread_stream(), user_w, im.weights);
    dnnl_thread_stream().wait();
    return 0;
  });
}

Conv2dCpu::~Conv2dCpu() = default;
Conv2dCpu::Conv2dCpu(Conv2dCpu&&) noexcept = default;
Conv2dCpu& Conv2dCpu::operator=(Conv2dCpu&&) noexcept = default;

double Conv2dCpu::flops(const Shape& x) const {
  Shape y = output_shape(x);
  return 2.0 * spec_.kh * spec_.kw * static_cast<double>(cin_) * cout_ * y[0] * y[1] * y[2];
}

void Conv2dCpu::forward(const Tensor& x, Tensor& y) {
  ENGINE_CHECK(impl_, "conv2d '", name_, "': used after move");
  ENGINE_CHECK(x.rank() == 4, "conv2d '", name_, "': input must be NHWC rank 4, got ",
               x.shape().str());
  ENGINE_CHECK(x.c() == cin_, "conv2d '", name_, "': input has ", x.c(), " channels, expected ",
               cin_, " (input ", x.shape().str(), ")");
  const Shape ys = output_shape(x.shape());
  ENGINE_CHECK(y.shape() == ys, "conv2d '", name_, "': output shape ", y.shape().str(),
               ", expected ", ys.str(), " for input ", x.shape().str());
  Impl& im = *impl_;
  const auto key = std::make_tuple(x.n(), x.h(), x.w(), execution_slot());
  std::unique_lock<std::mutex> lock(im.mu);
  auto it = im.cache.find(key);
  if (it == im.cache.end()) {
    Impl::Entry e = dnnl_checked("conv2d", name_, "primitive creation", [&] {
      auto pd = make_conv_pd(spec_, cin_, cout_, x.n(), x.h(), x.w(), im.attr);
      Impl::Entry en{dnnl::convolution_forward(pd), pd.src_desc(), pd.dst_desc(), im.weights,
                     dnnl::memory(pd.scratchpad_desc(), dnnl_cpu_engine())};
      if (std::getenv("ENGINE_CONV_VERBOSE"))
        std::fprintf(stderr, "conv2d '%s' N=%ld H=%ld W=%ld: %s, scratchpad %zu bytes\n",
                     name_.c_str(), static_cast<long>(x.n()), static_cast<long>(x.h()),
                     static_cast<long>(x.w()), pd.impl_info_str(), pd.scratchpad_desc().get_size());
      if (pd.weights_desc() != im.weights.get_desc()) {
        // This shape wants another blocking: reorder once more, from the blocked copy.
        en.weights = dnnl::memory(pd.weights_desc(), dnnl_cpu_engine());
        dnnl::reorder(im.weights, en.weights).execute(dnnl_thread_stream(), im.weights, en.weights);
        dnnl_thread_stream().wait();
      }
      return en;
    });
    it = im.cache.emplace(key, std::move(e)).first;
  }
  Impl::Entry& e = it->second;
  lock.unlock();
  dnnl_checked("conv2d", name_, "execution", [&] {
    dnnl::memory src(e.src_md, dnnl_cpu_engine(), const_cast<float*>(x.data()));
    dnnl::memory dst(e.dst_md, dnnl_cpu_engine(), y.data());
    e.prim.execute(dnnl_thread_stream(), {{DNNL_ARG_SRC, src},
                                          {DNNL_ARG_WEIGHTS, e.weights},
                                          {DNNL_ARG_BIAS, im.bias},
                                          {DNNL_ARG_DST, dst},
                                          {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
    dnnl_thread_stream().wait();
    return 0;
  });
}

}  // namespace engine
