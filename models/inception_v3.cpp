// models/inception_v3.cpp: the Inception v3 forward pass on the CPU; see the header. The block
// functions follow keras_applications/inception_v3.py line by line (branch order = concat order).
#include "models/inception_v3.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include <omp.h>

#include "engine/error.h"
#include "kernels/dense.h"
#include "kernels/pool2d.h"

namespace engine {

InceptionV3Cpu::InceptionV3Cpu(const InceptionWeights& w, int64_t micro_batch)
    : micro_batch_(micro_batch) {
  ENGINE_CHECK(micro_batch >= 1, "InceptionV3Cpu: micro_batch must be >= 1, got ", micro_batch);
  const auto& defs = inception_v3_conv_defs();
  ENGINE_CHECK(w.convs.size() == defs.size(), "InceptionV3Cpu: expected ", defs.size(),
               " convs, got ", w.convs.size());
  convs_.reserve(defs.size());
  for (const ConvDef& d : defs) {
    Conv2dSpec spec;
    spec.kh = d.kh, spec.kw = d.kw, spec.stride = d.stride, spec.padding = d.padding;
    spec.relu = true;
    const FoldedConv& fc = w.convs[static_cast<size_t>(d.index - 1)];
    convs_.emplace_back("conv C" + std::to_string(d.index), fc.w_hwio, fc.bias, d.cin, d.cout, spec);
  }
  has_top_ = w.has_top;
  top_classes_ = w.top_classes;
  top_kernel_ = w.top_kernel;
  top_bias_ = w.top_bias;
}

PooledTensor InceptionV3Cpu::conv(int index, const Tensor& x) {
  Conv2dCpu& c = convs_.at(static_cast<size_t>(index - 1));
  PooledTensor y = pool().acquire(c.output_shape(x.shape()));
  c.forward(x, *y);
  return y;
}

PooledTensor InceptionV3Cpu::max_pool(const Tensor& x) {
  PooledTensor y = pool().acquire(pool2d_output_shape(x.shape(), 3, 2, Padding::Valid));
  max_pool2d_forward_cpu(x, 3, 2, Padding::Valid, *y);
  return y;
}

PooledTensor InceptionV3Cpu::avg_pool_same(const Tensor& x) {
  PooledTensor y = pool().acquire(pool2d_output_shape(x.shape(), 3, 1, Padding::Same));
  avg_pool2d_forward_cpu(x, 3, 1, Padding::Same, *y);
  return y;
}

PooledTensor InceptionV3Cpu::concat(const std::vector<const Tensor*>& xs) {
  int64_t c = 0;
  for (const Tensor* t : xs) c += t->c();
  const Tensor& a = *xs.front();
  PooledTensor y = pool().acquire(Shape{a.n(), a.h(), a.w(), c});
  concat_channels_cpu(xs, *y);
  return y;
}

// mixed0..2: [1x1, 1x1->5x5, 1x1->3x3->3x3, avgpool->1x1]; `first` is the C# of the 1x1 branch.
PooledTensor InceptionV3Cpu::block35(const Tensor& x, int first) {
  PooledTensor b1 = conv(first, x);
  PooledTensor b5 = conv(first + 2, *conv(first + 1, x));
  PooledTensor b3 = conv(first + 5, *conv(first + 4, *conv(first + 3, x)));
  PooledTensor bp = conv(first + 6, *avg_pool_same(x));
  return concat({&*b1, &*b5, &*b3, &*bp});
}

// mixed3: [3x3/2, 1x1->3x3->3x3/2, maxpool].
PooledTensor InceptionV3Cpu::block_reduce35(const Tensor& x) {
  PooledTensor b3 = conv(27, x);
  PooledTensor bd = conv(30, *conv(29, *conv(28, x)));
  PooledTensor bp = max_pool(x);
  return concat({&*b3, &*bd, &*bp});
}

// mixed4..7: [1x1, 1x1->1x7->7x1, 1x1->7x1->1x7->7x1->1x7, avgpool->1x1].
PooledTensor InceptionV3Cpu::block17(const Tensor& x, int first) {
  PooledTensor b1 = conv(first, x);
  PooledTensor b7 = conv(first + 3, *conv(first + 2, *conv(first + 1, x)));
  PooledTensor d = conv(first + 5, *conv(first + 4, x));
  d = conv(first + 7, *conv(first + 6, *d));
  PooledTensor bd = conv(first + 8, *d);
  PooledTensor bp = conv(first + 9, *avg_pool_same(x));
  return concat({&*b1, &*b7, &*bd, &*bp});
}

// mixed8: [1x1->3x3/2, 1x1->1x7->7x1->3x3/2, maxpool].
PooledTensor InceptionV3Cpu::block_reduce17(const Tensor& x) {
  PooledTensor b3 = conv(72, *conv(71, x));
  PooledTensor b7 = conv(76, *conv(75, *conv(74, *conv(73, x))));
  PooledTensor bp = max_pool(x);
  return concat({&*b3, &*b7, &*bp});
}

// mixed9..10: [1x1, 1x1->[1x3, 3x1], 1x1->3x3->[1x3, 3x1], avgpool->1x1]; the inner pairs are
// concatenated in place (mixed9_0 etc. in Keras), so one concat of six pieces is the same tensor.
PooledTensor InceptionV3Cpu::block8(const Tensor& x, int first) {
  PooledTensor b1 = conv(first, x);
  PooledTensor t = conv(first + 1, x);
  PooledTensor b3a = conv(first + 2, *t), b3b = conv(first + 3, *t);
  t = conv(first + 5, *conv(first + 4, x));
  PooledTensor bda = conv(first + 6, *t), bdb = conv(first + 7, *t);
  PooledTensor bp = conv(first + 8, *avg_pool_same(x));
  return concat({&*b1, &*b3a, &*b3b, &*bda, &*bdb, &*bp});
}

void InceptionV3Cpu::forward(const Tensor& x, Tensor& bottleneck, const Tap& tap) {
  ENGINE_CHECK(x.rank() == 4 && x.h() == kInceptionInput && x.w() == kInceptionInput && x.c() == 3,
               "InceptionV3Cpu::forward: input must be (N, 299, 299, 3), got ", x.shape().str());
  ENGINE_CHECK(bottleneck.shape() == (Shape{x.n(), kBottleneckSize}),
               "InceptionV3Cpu::forward: bottleneck must be (", x.n(), ", 2048), got ",
               bottleneck.shape().str());
  const int64_t image = kInceptionInput * kInceptionInput * 3;
  const int64_t chunks = (x.n() + micro_batch_ - 1) / micro_batch_;
  auto run_chunk = [&](int64_t c) {
    const int64_t first = c * micro_batch_, n = std::min(micro_batch_, x.n() - first);
    const Tensor xs = Tensor::view(const_cast<float*>(x.data()) + first * image,
                                   Shape{n, kInceptionInput, kInceptionInput, 3});
    Tensor bs = Tensor::view(bottleneck.data() + first * kBottleneckSize, Shape{n, kBottleneckSize});
    forward_chunk(xs, bs, tap, first);
  };
  const int threads = batch_invariant_ ? omp_get_max_threads()
                                       : static_cast<int>(std::min<int64_t>(omp_get_max_threads(), chunks));
  // Grown only here, when no PooledTensor is alive (they point into their pool).
  if (pools_.size() < static_cast<size_t>(std::max(threads, 1)))
    pools_.resize(static_cast<size_t>(std::max(threads, 1)));
  if (threads <= 1) {
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(threads)
  {
    for (int64_t c = omp_get_thread_num(); c < chunks; c += threads) {
      try {
        run_chunk(c);
      } catch (...) {  // an exception must not leave an OpenMP region: keep the first, rethrow
        std::lock_guard<std::mutex> g(error_mu);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

BufferPool& InceptionV3Cpu::pool() {
  return pools_.at(omp_in_parallel() ? static_cast<size_t>(omp_get_thread_num()) : 0);
}

int64_t InceptionV3Cpu::activation_bytes() const {
  int64_t b = 0;
  for (const BufferPool& p : pools_) b += p.reserved_bytes();
  return b;
}

int64_t InceptionV3Cpu::activation_allocations() const {
  int64_t a = 0;
  for (const BufferPool& p : pools_) a += p.allocations();
  return a;
}

void InceptionV3Cpu::forward_chunk(const Tensor& x, Tensor& bottleneck, const Tap& tap,
                                   int64_t first) {
  auto emit = [&](const char* name, const PooledTensor& t) {
    if (!tap) return;
    std::lock_guard<std::mutex> g(tap_mu_);
    tap(name, *t, first);
  };
  PooledTensor h = conv(3, *conv(2, *conv(1, x)));
  h = max_pool(*h);
  h = conv(5, *conv(4, *h));
  h = max_pool(*h);
  emit("stem", h);
  h = block35(*h, 6), emit("mixed0", h);
  h = block35(*h, 13), emit("mixed1", h);
  h = block35(*h, 20), emit("mixed2", h);
  h = block_reduce35(*h), emit("mixed3", h);
  h = block17(*h, 31), emit("mixed4", h);
  h = block17(*h, 41), emit("mixed5", h);
  h = block17(*h, 51), emit("mixed6", h);
  h = block17(*h, 61), emit("mixed7", h);
  h = block_reduce17(*h), emit("mixed8", h);
  h = block8(*h, 77), emit("mixed9", h);
  h = block8(*h, 86), emit("mixed10", h);
  global_avg_pool_cpu(*h, bottleneck);
}

void InceptionV3Cpu::predict_top(const Tensor& bottleneck, Tensor& probs) const {
  ENGINE_CHECK(has_top_, "InceptionV3Cpu::predict_top: the weight file has no 'predictions' layer");
  dense_forward_cpu(bottleneck, top_kernel_.data(), top_bias_.data(), top_classes_, probs);
  for (int64_t n = 0; n < probs.dim(0); ++n) {  // numerically stable softmax per row
    float* p = probs.data() + n * top_classes_;
    float m = p[0];
    for (int64_t k = 1; k < top_classes_; ++k) m = std::max(m, p[k]);
    double s = 0;
    for (int64_t k = 0; k < top_classes_; ++k) s += (p[k] = std::exp(p[k] - m));
    for (int64_t k = 0; k < top_classes_; ++k) p[k] = static_cast<float>(p[k] / s);
  }
}

double InceptionV3Cpu::flops_per_image() const { return inception_v3_flops_per_image(); }

}  // namespace engine
