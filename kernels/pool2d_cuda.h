// kernels/pool2d_cuda.h: the GPU twins of kernels/pool2d.h: max and average pooling with TF
// 'same'/'valid' padding (the average divides by the number of VALID input cells, i.e. excludes
// padding, as TF and Keras do), a strided copy (copies a packed tensor into a channel slice of a
// wider one for concat, converts layout NHWC <-> NCHW and dtype fp32 <-> fp16), and the global
// average pool (always fp32 out, fp32 accumulation). Plain CUDA kernels, one thread per output
// element, simple and correct first. Every tensor is a StridedView: element strides per N/H/W/C,
// so one kernel serves NHWC, NCHW and channel slices; threads walk the output in its memory order
// (C fastest when the output's C stride is 1, else W fastest) so writes are coalesced.
// Each launcher takes a cudaStream_t and a context string (the layer) for KERNEL_LAUNCH_CHECK.
// Tests: tests/test_kernels_layers.cpp (Cuda/Pool2dKernel: fp32/fp16, NHWC/NCHW, odd and Inception
// shapes vs the CPU versions). Bench: bench/bench_kernels_cuda.cpp (pool2d/* rows, GB/s).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/conv2d.h"
#include "kernels/conv2d_cudnn.h"

namespace engine {

enum class DType { F32, F16 };
inline size_t dtype_bytes(DType t) { return t == DType::F16 ? 2 : 4; }
inline DType dtype_of(Precision p) { return p == Precision::FP16 ? DType::F16 : DType::F32; }

struct Strides4 {
  int64_t n, h, w, c;  // in elements
};

struct StridedView {
  void* data = nullptr;  // element (0,0,0,0)
  DType dtype = DType::F32;
  int64_t n = 0, h = 0, w = 0, c = 0;
  Strides4 st{0, 0, 0, 0};
};

// A packed tensor of the given layout.
StridedView packed_view(void* data, DType dtype, TensorLayout layout, int64_t n, int64_t h,
                        int64_t w, int64_t c);
// Channels [c_off, c_off + c_count) of a packed (n, h, w, c_total) tensor of the given layout.
StridedView channel_slice(void* data, DType dtype, TensorLayout layout, int64_t n, int64_t h,
                          int64_t w, int64_t c_total, int64_t c_off, int64_t c_count);

// y must have the pooled shape (pool2d_output_shape); x and y share dtype.
void max_pool2d_cuda(const StridedView& x, const StridedView& y, int k, int stride, Padding p,
                     cudaStream_t stream, const std::string& ctx);
void avg_pool2d_cuda(const StridedView& x, const StridedView& y, int k, int stride, Padding p,
                     cudaStream_t stream, const std::string& ctx);
// dst = src element-wise (same n, h, w, c), converting dtype when they differ.
void copy_strided_cuda(const StridedView& src, const StridedView& dst, cudaStream_t stream,
                       const std::string& ctx);
// y (n, c) fp32 = mean over h, w of x.
void global_avg_pool_cuda(const StridedView& x, float* y, cudaStream_t stream,
                          const std::string& ctx);

}  // namespace engine
