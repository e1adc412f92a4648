// tests/kernel_cases_cuda.h: the CUDA side of the kernel case tables (tests/kernel_cases.h,
// tests/kernel_cases_layers.h): for each family, cuda_run(case, inputs, stream) uploads the inputs
// once and returns the family's CudaRunOf<Case>, a CudaRun whose launch(stream) calls the
// family's CUDA entry point on device-resident buffers (what the benchmark times) and whose
// download(stream) returns the same named outputs as the family's cpu() (what the test compares).
// Every buffer, stream and handle is an owner from engine/cuda_resources.h. Only built when
// ENGINE_HAVE_CUDA is defined.
#pragma once
#ifdef ENGINE_HAVE_CUDA
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/cuda_resources.h"
#include "kernels/conv2d_cudnn.h"
#include "kernels/pool2d_cuda.h"
#include "tests/kernel_cases.h"
#include "tests/kernel_cases_layers.h"

namespace engine::kernel_cases {

class CudaRun {
 public:
  virtual ~CudaRun() = default;
  virtual void launch(cudaStream_t s) = 0;
  // Launches whose combined effect the test compares (RMSProp: one per step of the case).
  virtual int launches() const { return 1; }
  virtual Outputs download(cudaStream_t s) = 0;
};

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& v, cudaStream_t s, const std::string& what) {
  DeviceBuffer<T> d(v.size(), what);
  d.upload(v.data(), v.size(), s, what);
  return d;
}
template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d, cudaStream_t s, const std::string& what) {
  std::vector<T> v(d.size());
  d.download(v.data(), v.size(), s, what);
  CUDA_CHECK(cudaStreamSynchronize(s), what);
  return v;
}
inline std::vector<float> to_host_scalar(const DeviceBuffer<int64_t>& d, cudaStream_t s,
                                         const std::string& what) {
  return {static_cast<float>(to_host(d, s, what).at(0))};
}

// The run of each family, by its case type (one specialisation a family, below).
template <typename Case>
class CudaRunOf;

// ---- dropout -------------------------------------------------------------------------------
template <>
class CudaRunOf<DropoutCase> : public CudaRun {
 public:
  CudaRunOf(const DropoutCase& c, const Dropout::Inputs& in, cudaStream_t s)
      : c_(c),
        x_(to_device(in.x, s, "dropout x")),
        dy_(to_device(in.dy, s, "dropout dy")),
        y_(in.x.size(), "dropout y"),
        dx_(in.dy.size(), "dropout dx"),
        step_(to_device(std::vector<int64_t>{c.key.step}, s, "dropout step")) {}
  void launch(cudaStream_t s) override {
    dropout_forward_cuda(x_.data(), y_.data(), c_.n, c_.p, c_.key.seed, step_.data(), c_.key.stream,
                         s);
    dropout_backward_cuda(dy_.data(), dx_.data(), c_.n, c_.p, c_.key.seed, step_.data(),
                          c_.key.stream, s);
  }
  Outputs download(cudaStream_t s) override {
    return {{"y", to_host(y_, s, "dropout y")}, {"dx", to_host(dx_, s, "dropout dx")}};
  }

 private:
  DropoutCase c_;
  DeviceBuffer<float> x_, dy_, y_, dx_;
  DeviceBuffer<int64_t> step_;
};

// ---- softmax_xent --------------------------------------------------------------------------
template <>
class CudaRunOf<SoftmaxXentCase> : public CudaRun {
 public:
  CudaRunOf(const SoftmaxXentCase& c, const SoftmaxXent::Inputs& in, cudaStream_t s)
      : c_(c),
        z_(to_device(in.z, s, "softmax logits")),
        y_(to_device(in.y, s, "softmax labels")),
        g_(in.z.size(), "softmax dlogits"),
        p_(in.z.size(), "softmax probs"),
        loss_(1, "softmax loss"),
        scratch_(static_cast<size_t>(2 * c.n + 2), "softmax scratch") {
    if (!in.w.empty()) w_ = to_device(in.w, s, "softmax class weights");
  }
  void launch(cudaStream_t s) override {
    softmax_xent_cuda(z_.data(), y_.data(), w_ ? w_.data() : nullptr, c_.n, c_.k, g_.data(),
                      loss_.data(), scratch_.data(), s);
    softmax_cuda(z_.data(), p_.data(), c_.n, c_.k, s);
  }
  Outputs download(cudaStream_t s) override {
    return {{"loss", to_host(loss_, s, "softmax loss")},
            {"dlogits", to_host(g_, s, "softmax dlogits")},
            {"probs", to_host(p_, s, "softmax probs")}};
  }

 private:
  SoftmaxXentCase c_;
  DeviceBuffer<float> z_;
  DeviceBuffer<int32_t> y_;
  DeviceBuffer<float> w_, g_, p_, loss_, scratch_;
};

// ---- rmsprop: launch k applies gradient k % steps (all uploaded once) -----------------------
template <>
class CudaRunOf<RmsPropCase> : public CudaRun {
 public:
  CudaRunOf(const RmsPropCase& c, const RmsProp::Inputs& in, cudaStream_t s)
      : c_(c),
        cfg_(c.config()),
        p_(to_device(in.p, s, "rmsprop params")),
        ms_(to_device(in.ms, s, "rmsprop ms")),
        mom_(to_device(in.mom, s, "rmsprop mom")),
        g_(static_cast<size_t>(c.n * c.steps), "rmsprop grads"),
        step_(to_device(std::vector<int64_t>{0}, s, "rmsprop step")) {
    for (int k = 0; k < c.steps; ++k)
      CUDA_CHECK(cudaMemcpyAsync(g_.data() + k * c.n, in.g[size_t(k)].data(), sizeof(float) * c.n,
                                 cudaMemcpyHostToDevice, s),
                 "rmsprop grads");
    CUDA_CHECK(cudaStreamSynchronize(s), "rmsprop upload");
  }
  void launch(cudaStream_t s) override {
    const int k = next_++ % c_.steps;
    rmsprop_update_cuda(p_.data(), g_.data() + k * c_.n, ms_.data(), mom_.data(), c_.n, cfg_,
                        step_.data(), s);
  }
  int launches() const override { return c_.steps; }
  Outputs download(cudaStream_t s) override {
    return {{"params", to_host(p_, s, "rmsprop params")},
            {"ms", to_host(ms_, s, "rmsprop ms")},
            {"mom", to_host(mom_, s, "rmsprop mom")},
            {"step", to_host_scalar(step_, s, "rmsprop step")}};
  }

 private:
  RmsPropCase c_;
  RmsPropConfig cfg_;
  DeviceBuffer<float> p_, ms_, mom_, g_;
  DeviceBuffer<int64_t> step_;
  int next_ = 0;
};

// ---- dense and dense_grad: cuBLAS in FP32 math mode on the run's stream ----------------------
inline CublasHandle fp32_cublas(cudaStream_t s, const std::string& what) {
  CublasHandle h = CublasHandle::create(what);
  CUBLAS_CHECK(cublasSetStream(h, s), what);
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), what);  // no TF32
  return h;
}

template <>
class CudaRunOf<DenseCase> : public CudaRun {
 public:
  CudaRunOf(const DenseCase& c, const Dense::Inputs& in, cudaStream_t s)
      : c_(c),
        h_(fp32_cublas(s, "dense")),
        x_(to_device(in.x, s, "dense x")),
        w_(to_device(in.w, s, "dense W")),
        b_(to_device(in.b, s, "dense b")),
        y_(static_cast<size_t>(c.n * c.out), "dense y") {}
  void launch(cudaStream_t s) override {
    sgemm_rowmajor_cuda(h_, false, false, c_.n, c_.out, c_.in, 1.f, x_.data(), c_.in, w_.data(),
                        c_.out, 0.f, y_.data(), c_.out, "dense");
    bias_act_forward_cuda(y_.data(), b_.data(), c_.n, c_.out, false, s);
  }
  Outputs download(cudaStream_t s) override { return {{"y", to_host(y_, s, "dense y")}}; }

 private:
  DenseCase c_;
  CublasHandle h_;
  DeviceBuffer<float> x_, w_, b_, y_;
};

template <>
class CudaRunOf<DenseGradCase> : public CudaRun {
 public:
  CudaRunOf(const DenseGradCase& c, const DenseGrad::Inputs& in, cudaStream_t s)
      : c_(c),
        h_(fp32_cublas(s, "dense_grad")),
        x_(to_device(in.x, s, "dense_grad x")),
        w_(to_device(in.w, s, "dense_grad W")),
        b_(to_device(in.b, s, "dense_grad b")),
        r_(to_device(in.r, s, "dense_grad r")),
        a_(size_t(c.n * c.out), "dense_grad a"),
        dz_(size_t(c.n * c.out), "dense_grad dz"),
        dW_(size_t(c.in * c.out), "dense_grad dW"),
        db_(size_t(c.out), "dense_grad db"),
        dx_(size_t(c.n * c.in), "dense_grad dx") {}
  void launch(cudaStream_t s) override {
    const int64_t N = c_.n, I = c_.in, O = c_.out;
    sgemm_rowmajor_cuda(h_, false, false, N, O, I, 1.f, x_.data(), I, w_.data(), O, 0.f, a_.data(),
                        O, "t");
    bias_act_forward_cuda(a_.data(), b_.data(), N, O, true, s);
    relu_backward_cuda(r_.data(), a_.data(), dz_.data(), N * O, s);
    sgemm_rowmajor_cuda(h_, true, false, I, O, N, 1.f, x_.data(), I, dz_.data(), O, 0.f, dW_.data(),
                        O, "t");
    bias_grad_cuda(dz_.data(), db_.data(), N, O, s);
    sgemm_rowmajor_cuda(h_, false, true, N, I, O, 1.f, dz_.data(), O, w_.data(), O, 0.f, dx_.data(),
                        I, "t");
  }
  Outputs download(cudaStream_t s) override {
    return {{"a", to_host(a_, s, "a")},
            {"dW", to_host(dW_, s, "dW")},
            {"db", to_host(db_, s, "db")},
            {"dx", to_host(dx_, s, "dx")}};
  }

 private:
  DenseGradCase c_;
  CublasHandle h_;
  DeviceBuffer<float> x_, w_, b_, r_, a_, dz_, dW_, db_, dx_;
};

// ---- device tensors in a GpuFormat (upload/download through the copy kernel) -----------------
inline DType format_dtype(GpuFormat f) { return is_fp16(f) ? DType::F16 : DType::F32; }
inline TensorLayout format_layout(GpuFormat f) {
  return is_nchw(f) ? TensorLayout::NCHW : TensorLayout::NHWC;
}
inline Precision format_precision(GpuFormat f) {
  return is_fp16(f) ? Precision::FP16 : is_tf32(f) ? Precision::TF32 : Precision::FP32;
}

struct DeviceTensor {
  DeviceBuffer<char> buf;
  StridedView v;
  DeviceTensor(Shape s, DType dt, TensorLayout l)
      : buf(static_cast<size_t>(s.numel()) * dtype_bytes(dt), "test tensor") {
    v = packed_view(buf.data(), dt, l, s[0], s[1], s[2], s[3]);
  }
  // Host NHWC fp32 -> device tensor of the given dtype/layout.
  DeviceTensor(const Tensor& host, DType dt, TensorLayout l, cudaStream_t s)
      : DeviceTensor(host.shape(), dt, l) {
    const DeviceBuffer<float> tmp =
        to_device(std::vector<float>(host.data(), host.data() + host.numel()), s, "upload");
    copy_strided_cuda(packed_view(tmp.data(), DType::F32, TensorLayout::NHWC, v.n, v.h, v.w, v.c),
                      v, s, "test upload");
    CUDA_CHECK(cudaStreamSynchronize(s), "test upload");
  }
  std::vector<float> download(cudaStream_t s) const {
    DeviceBuffer<float> tmp(static_cast<size_t>(v.n * v.h * v.w * v.c), "download");
    copy_strided_cuda(v,
                      packed_view(tmp.data(), DType::F32, TensorLayout::NHWC, v.n, v.h, v.w, v.c),
                      s, "test download");
    return to_host(tmp, s, "download");
  }
};

// ---- conv2d: handle first, then the conv (its plans are bound to the handle), then buffers ----
template <>
class CudaRunOf<Conv2dCase> : public CudaRun {
 public:
  CudaRunOf(const Conv2dCase& c, const Conv2d::Inputs& in, cudaStream_t s)
      : c_(c),
        h_(CudnnHandle::create("conv " + c.name)),
        conv_("conv " + c.name, c.cin, c.cout, c.spec, format_precision(c.format),
              format_layout(c.format)),
        x_(in.x, format_dtype(c.format), format_layout(c.format), s),
        w_(filter_tensor(c, in), format_dtype(c.format), TensorLayout::NHWC, s),
        b_(Tensor::view(const_cast<float*>(in.bias.data()), Shape{1, 1, 1, c.cout}),
           format_dtype(c.format), TensorLayout::NHWC, s),
        y_(c.y_shape(), format_dtype(c.format), format_layout(c.format)) {
    CUDNN_CHECK(cudnnSetStream(h_, s), conv_.name());
    const ConvPlanInfo& info =
        conv_.prepare(h_, c.n, c.h, c.w, x_.v.data, w_.v.data, b_.v.data, y_.v.data);
    ws_ = DeviceBuffer<char>(static_cast<size_t>(info.workspace), conv_.name() + " workspace");
  }
  void launch(cudaStream_t) override {
    conv_.forward(h_, c_.n, c_.h, c_.w, x_.v.data, w_.v.data, b_.v.data, y_.v.data, ws_.data(),
                  static_cast<int64_t>(ws_.size()));
  }
  Outputs download(cudaStream_t s) override { return {{"y", y_.download(s)}}; }

 private:
  // Filters go through the same upload path as an 1 x 1 x 1 x (kh*kw*cin*cout) "image".
  static Tensor filter_tensor(const Conv2dCase& c, const Conv2d::Inputs& in) {
    const std::vector<float> f = conv_filter_for_cudnn(in.w_hwio, c.spec.kh, c.spec.kw, c.cin,
                                                       c.cout, format_layout(c.format));
    return Tensor::from(Shape{1, 1, 1, static_cast<int64_t>(f.size())}, f);
  }
  Conv2dCase c_;
  CudnnHandle h_;
  Conv2dCudnn conv_;
  DeviceTensor x_, w_, b_, y_;
  DeviceBuffer<char> ws_;
};

// ---- pool2d -------------------------------------------------------------------------------
template <>
class CudaRunOf<Pool2dCase> : public CudaRun {
 public:
  CudaRunOf(const Pool2dCase& c, const Pool2d::Inputs& in, cudaStream_t s) : c_(c) {
    const DType dt = format_dtype(c.format);
    const TensorLayout l = format_layout(c.format);
    for (const Tensor& t : in.x) x_.emplace_back(t, dt, l, s);
    if (c.op == PoolOp::GlobalAvg)
      gap_ = DeviceBuffer<float>(size_t(c.n * c.c), "global avg out");
    else
      y_ = std::make_unique<DeviceTensor>(c.y_shape(), dt, l);
  }
  void launch(cudaStream_t s) override {
    switch (c_.op) {
      case PoolOp::Max: max_pool2d_cuda(x_[0].v, y_->v, c_.k, c_.stride, c_.pad, s, c_.name); break;
      case PoolOp::Avg: avg_pool2d_cuda(x_[0].v, y_->v, c_.k, c_.stride, c_.pad, s, c_.name); break;
      case PoolOp::GlobalAvg: global_avg_pool_cuda(x_[0].v, gap_.data(), s, c_.name); break;
      case PoolOp::Concat: {
        int64_t off = 0;
        for (const DeviceTensor& p : x_) {
          copy_strided_cuda(
              p.v,
              channel_slice(y_->buf.data(), format_dtype(c_.format), format_layout(c_.format), c_.n,
                            c_.h, c_.w, c_.c, off, p.v.c),
              s, c_.name);
          off += p.v.c;
        }
        break;
      }
    }
  }
  Outputs download(cudaStream_t s) override {
    if (c_.op == PoolOp::GlobalAvg) return {{"y", to_host(gap_, s, c_.name)}};
    return {{"y", y_->download(s)}};
  }

 private:
  Pool2dCase c_;
  std::vector<DeviceTensor> x_;
  std::unique_ptr<DeviceTensor> y_;
  DeviceBuffer<float> gap_;
};

// The family's run for case `c`: its inputs `in` uploaded on stream `s`.
template <typename Case, typename Inputs>
std::unique_ptr<CudaRun> cuda_run(const Case& c, const Inputs& in, cudaStream_t s) {
  return std::make_unique<CudaRunOf<Case>>(c, in, s);
}

}  // namespace engine::kernel_cases
#endif  // ENGINE_HAVE_CUDA
