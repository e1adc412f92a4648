// kernels/dense.h: fully connected layer y = x @ W + b, x (N,cin), W (cin,cout) row-major (Keras
// layout), b (cout) or nullptr. dense_forward_ref_cpu is plain loops (double accumulation);
// dense_forward_cpu is the sgemm (oneDNN dnnl_sgemm) production version. On the GPU a dense layer
// is sgemm_rowmajor_cuda + bias_act_forward_cuda (kernels/dense_grad.h).
// Tests: tests/test_layers.cpp (PyTorch reference file), tests/test_kernels_layers.cpp
// (Cpu/ and Cuda/DenseKernel). Bench: bench/bench_kernels_cuda.cpp (dense/* rows).
#pragma once
#include "engine/tensor.h"

namespace engine {

void dense_forward_ref_cpu(const Tensor& x, const float* w, const float* b, int64_t cout,
                           Tensor& y);
void dense_forward_cpu(const Tensor& x, const float* w, const float* b, int64_t cout, Tensor& y);

}  // namespace engine
