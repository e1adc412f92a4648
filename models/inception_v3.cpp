// models/inception_v3.cpp: the Inception v3 forward pass on the CPU: a walk over
// inception_v3_graph() (models/inception_graph.h), which holds the topology; see the header.
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
  const InceptionGraph& g = inception_v3_graph();
  ENGINE_CHECK(w.convs.size() == g.conv_ops.size(), "InceptionV3Cpu: expected ", g.conv_ops.size(),
               " convs, got ", w.convs.size());
  convs_.reserve(g.conv_ops.size());
  for (size_t i = 0; i < g.conv_ops.size(); ++i) {
    const GraphOp& op = g.conv(static_cast<int>(i));
    Conv2dSpec spec;
    spec.kh = op.kh, spec.kw = op.kw, spec.stride = op.stride, spec.padding = op.padding;
    spec.relu = true;
    const FoldedConv& fc = w.convs[i];
    convs_.emplace_back("conv C" + std::to_string(i + 1) + " (" + op.name + ")", fc.w_hwio, fc.bias,
                        op.cin, op.cout, spec);
  }
  has_top_ = w.has_top;
  top_classes_ = w.top_classes;
  top_kernel_ = w.top_kernel;
  top_bias_ = w.top_bias;
}

PooledTensor InceptionV3Cpu::run_op(const GraphOp& op, const std::vector<const Tensor*>& in) {
  const Tensor& x = *in.at(0);
  switch (op.type) {
    case GraphOpType::Conv: {
      Conv2dCpu& c = convs_.at(static_cast<size_t>(op.weight));
      PooledTensor y = pool().acquire(c.output_shape(x.shape()));
      c.forward(x, *y);
      return y;
    }
    case GraphOpType::MaxPool: {
      PooledTensor y = pool().acquire(pool2d_output_shape(x.shape(), op.kh, op.stride, op.padding));
      max_pool2d_forward_cpu(x, op.kh, op.stride, op.padding, *y);
      return y;
    }
    case GraphOpType::AvgPool: {  // padding excluded from the divisor, as Keras
      PooledTensor y = pool().acquire(pool2d_output_shape(x.shape(), op.kh, op.stride, op.padding));
      avg_pool2d_forward_cpu(x, op.kh, op.stride, op.padding, *y);
      return y;
    }
    case GraphOpType::Concat: {
      int64_t c = 0;
      for (const Tensor* t : in) c += t->c();
      PooledTensor y = pool().acquire(Shape{x.n(), x.h(), x.w(), c});
      concat_channels_cpu(in, *y);
      return y;
    }
    case GraphOpType::GlobalAvgPool:
      break;  // writes the caller's bottleneck: forward_chunk runs it
  }
  fail("InceptionV3Cpu: op ", op.name, " (", graph_op_type_name(op.type), ") has no CPU form here");
}

void InceptionV3Cpu::forward(const Tensor& x, Tensor& bottleneck, const Tap& tap) {
  const InceptionGraph& g = inception_v3_graph();
  const GraphTensor& in = g.tensor(g.input);
  const int64_t out_c = g.tensor(g.output).c;
  ENGINE_CHECK(x.rank() == 4 && x.h() == in.h && x.w() == in.w && x.c() == in.c,
               "InceptionV3Cpu::forward: input must be (N, ", in.h, ", ", in.w, ", ", in.c,
               "), got ", x.shape().str());
  ENGINE_CHECK(bottleneck.shape() == (Shape{x.n(), out_c}),
               "InceptionV3Cpu::forward: bottleneck must be (", x.n(), ", ", out_c, "), got ",
               bottleneck.shape().str());
  const int64_t image = in.h * in.w * in.c;
  const int64_t chunks = (x.n() + micro_batch_ - 1) / micro_batch_;
  auto run_chunk = [&](int64_t c) {
    const int64_t first = c * micro_batch_, n = std::min(micro_batch_, x.n() - first);
    const Tensor xs =
        Tensor::view(const_cast<float*>(x.data()) + first * image, Shape{n, in.h, in.w, in.c});
    Tensor bs = Tensor::view(bottleneck.data() + first * out_c, Shape{n, out_c});
    forward_chunk(xs, bs, tap, first);
  };
  const int threads = micro_batch_threads(chunks, batch_invariant_);
  // Grown only here, when no PooledTensor is alive (they point into their pool).
  if (pools_.size() < static_cast<size_t>(threads)) pools_.resize(static_cast<size_t>(threads));
  run_micro_batches(chunks, threads, run_chunk);
}

int micro_batch_threads(int64_t chunks, bool batch_invariant) {
  const int t = batch_invariant
                    ? omp_get_max_threads()
                    : static_cast<int>(std::min<int64_t>(omp_get_max_threads(), chunks));
  return std::max(t, 1);
}

void run_micro_batches(int64_t chunks, int threads, const std::function<void(int64_t)>& run) {
  if (threads <= 1) {
    for (int64_t c = 0; c < chunks; ++c) run(c);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(threads)
  {
    for (int64_t c = omp_get_thread_num(); c < chunks; c += threads) {
      try {
        run(c);
      } catch (...) {
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

// Ops run in graph order; each activation goes back to the pool right after its last reader.
void InceptionV3Cpu::forward_chunk(const Tensor& x, Tensor& bottleneck, const Tap& tap,
                                   int64_t first) {
  const InceptionGraph& g = inception_v3_graph();
  std::vector<PooledTensor> live(g.tensors.size());  // tensor id -> activation while needed
  std::vector<const Tensor*> in;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    in.clear();
    for (int id : op.inputs) in.push_back(id == g.input ? &x : &*live[static_cast<size_t>(id)]);
    if (op.type == GraphOpType::GlobalAvgPool) {
      global_avg_pool_cpu(*in.at(0), bottleneck);
    } else {
      PooledTensor& y = live[static_cast<size_t>(op.output)];
      y = run_op(op, in);
      const GraphTensor& out = g.tensor(op.output);
      if (tap && (tap_every_tensor_ || !out.tap.empty())) {
        std::lock_guard<std::mutex> lock(tap_mu_);
        tap(tap_every_tensor_ ? out.name : out.tap, *y, first);
      }
    }
    for (int id : op.inputs)
      if (id != g.input && g.tensor(id).last_use == static_cast<int>(i))
        live[static_cast<size_t>(id)] = PooledTensor();
  }
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
