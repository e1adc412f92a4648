// kernels/pool2d.h: max and average pooling (TF 'same'/'valid'; the average divides by the number
// of VALID input cells, i.e. excludes padding, as TF and Keras do), channel concat, and global
// average pooling. NHWC, CPU versions parallel over both cores with OpenMP. GPU twins:
// kernels/pool2d_cuda.h. Tests: tests/test_layers.cpp (PyTorch reference file, divisor and padding
// closed forms), tests/test_kernels_layers.cpp (Cpu/Pool2dKernel vs loops from the definition).
// Bench: bench/bench_layers.cpp (CPU GB/s).
#pragma once
#include <vector>

#include "engine/tensor.h"
#include "kernels/conv2d.h"

namespace engine {

Shape pool2d_output_shape(const Shape& x, int k, int stride, Padding p);
void max_pool2d_forward_cpu(const Tensor& x, int k, int stride, Padding p, Tensor& y);
void avg_pool2d_forward_cpu(const Tensor& x, int k, int stride, Padding p, Tensor& y);

// y (N,H,W,sum C) = [xs[0], xs[1], ...] along channels; all xs share N,H,W.
void concat_channels_cpu(const std::vector<const Tensor*>& xs, Tensor& y);

// (N,H,W,C) -> (N,C)
void global_avg_pool_cpu(const Tensor& x, Tensor& y);

}  // namespace engine
