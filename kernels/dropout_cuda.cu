// kernels/dropout_cuda.cu: CUDA inverted dropout over the Philox4x32-10 of kernels/dropout.h.
// One thread per group of 4 elements (one Philox call); the step is read from device memory so
// the kernel can be replayed inside a CUDA graph while the optimizer advances the counter.
// Bit-identical to dropout_cpu.cpp: same generator, same threshold, x * (1/(1-p)) in float.
#include "engine/cuda_check.h"
#include "kernels/dropout.h"

namespace engine {

__global__ void dropout_apply_kernel(const float* x, float* y, int64_t n, uint32_t thr, float scale,
                                     uint64_t seed, const int64_t* __restrict__ d_step,
                                     uint32_t stream_id) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t base = g * 4;
  if (base >= n) return;
  const Philox4x32 r = dropout_words(seed, *d_step, stream_id, static_cast<uint64_t>(g));
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (base + j < n) y[base + j] = r.v[j] >= thr ? __fmul_rn(x[base + j], scale) : 0.f;
}

namespace {
void launch(const char* what, const float* x, float* y, int64_t n, float p, uint64_t seed,
            const int64_t* d_step, uint32_t stream_id, cudaStream_t stream) {
  ENGINE_CHECK(p >= 0.f && p < 1.f, what, ": dropout rate must be in [0, 1), got ", p);
  if (n <= 0) return;
  const float scale = 1.f / (1.f - p);  // host float division == CPU twin's
  const int64_t groups = (n + 3) / 4;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((groups + threads - 1) / threads);
  dropout_apply_kernel<<<blocks, threads, 0, stream>>>(x, y, n, dropout_threshold(p), scale, seed,
                                                       d_step, stream_id);
  KERNEL_LAUNCH_CHECK(what);
}
}  // namespace

void dropout_forward_cuda(const float* x, float* y, int64_t n, float p, uint64_t seed,
                          const int64_t* d_step, uint32_t stream_id, cudaStream_t stream) {
  launch("dropout_forward_cuda", x, y, n, p, seed, d_step, stream_id, stream);
}

void dropout_backward_cuda(const float* dy, float* dx, int64_t n, float p, uint64_t seed,
                           const int64_t* d_step, uint32_t stream_id, cudaStream_t stream) {
  launch("dropout_backward_cuda", dy, dx, n, p, seed, d_step, stream_id, stream);
}

}  // namespace engine
