// kernels/conv2d.h: 2-D convolution with bias and optional fused ReLU, NHWC in and out, weights in
// the Keras layout (kh, kw, cin, cout), TF 'same'/'valid' padding arithmetic. Two CPU versions:
// conv2d_forward_ref_cpu (plain loops, the reference for the small layer tests) and Conv2dCpu
// (oneDNN, weights reordered once, primitives cached per input shape: the production path).
// Batch norm is folded into weights + bias by fold_batch_norm at load time (Keras: no gamma).
// Tests: tests/test_layers.cpp (PyTorch reference file, TF padding table, errors) and
// tests/test_kernels_layers.cpp (Cpu/Conv2dKernel: Conv2dCpu vs the plain loops). Bench:
// bench/bench_layers.cpp (CPU GFLOP/s); the GPU twin is kernels/conv2d_cudnn.h.
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace engine {

enum class Padding { Same, Valid };
const char* padding_name(Padding p);

// TF padding for one spatial dim: out = ceil(in/s) ('same') or ceil((in-k+1)/s) ('valid');
// for 'same' pad_total = max((out-1)*s + k - in, 0), before = total/2, after = the rest.
struct PadInfo {
  int64_t out, before, after;
};
PadInfo tf_padding(int64_t in, int64_t k, int64_t stride, Padding p);

struct Conv2dSpec {
  int kh = 1, kw = 1;
  int stride = 1;
  Padding padding = Padding::Same;
  bool relu = true;
};
Shape conv2d_output_shape(const Shape& x, int64_t cout, const Conv2dSpec& spec);

// Folds inference BN (y = (x - mean) / sqrt(var + eps) + beta, no gamma) into a bias-free conv:
// w[..., o] *= 1/sqrt(var[o]+eps); bias[o] = beta[o] - mean[o]/sqrt(var[o]+eps). w is
// (kh,kw,cin,cout).
void fold_batch_norm(std::vector<float>& w_hwio, int64_t cout, const float* beta, const float* mean,
                     const float* var, float eps, std::vector<float>& bias);

// Plain-loop reference (OpenMP over N*Ho). w: (kh,kw,cin,cout), b: (cout) or nullptr. y
// preallocated.
void conv2d_forward_ref_cpu(const Tensor& x, const float* w_hwio, const float* bias, int64_t cout,
                            const Conv2dSpec& spec, Tensor& y);

// Production CPU convolution through oneDNN. Construct once per layer; forward is thread-safe for
// one caller at a time. `name` is used in error messages.
class Conv2dCpu {
 public:
  Conv2dCpu(std::string name, const std::vector<float>& w_hwio, const std::vector<float>& bias,
            int64_t cin, int64_t cout, const Conv2dSpec& spec);
  ~Conv2dCpu();
  Conv2dCpu(Conv2dCpu&&) noexcept;
  Conv2dCpu& operator=(Conv2dCpu&&) noexcept;
  Shape output_shape(const Shape& x) const { return conv2d_output_shape(x, cout_, spec_); }
  int64_t cin() const { return cin_; }
  int64_t cout() const { return cout_; }
  const Conv2dSpec& spec() const { return spec_; }
  const std::string& name() const { return name_; }
  // y must have output_shape(x.shape()); both NHWC, contiguous.
  void forward(const Tensor& x, Tensor& y);
  double flops(const Shape& x) const;  // 2*kh*kw*cin*cout*N*Ho*Wo

 private:
  struct Impl;
  std::string name_;
  int64_t cin_, cout_;
  Conv2dSpec spec_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace engine
