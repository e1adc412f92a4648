// kernels/softmax_xent.h: row softmax and fused softmax + cross-entropy over logits (N, K),
// row-major, integer labels in [0, K), optional per-class weights w (K) (nullptr = all 1):
//   p_i      = softmax(z_i), computed as exp(z_i - max z_i) / sum exp(z_i - max z_i)
//   loss     = sum_i w[y_i] * (lse_i - z_i[y_i]) / sum_i w[y_i]      (PyTorch CrossEntropyLoss
//              (weight=w, reduction='mean')); lse_i = max + log(sum exp(z - max)), never overflows
//   dlogits  = w[y_i] * (p_i - onehot(y_i)) / sum_i w[y_i]
// CPU: per-row terms in float, batch sums in double (fixed order). CUDA: one warp per row, the
// batch sums reduced by a single block in a fixed order (deterministic, no atomics), then the
// gradient scaled by 1/sum w read from device memory; all in one stream, graph-capturable.
// Tests: tests/test_kernels_head.cpp (closed forms, finite differences, Cpu/ and
// Cuda/SoftmaxXentKernel), tests/test_softmax_cuda.cpp (in place equals out of place).
// Bench: bench/bench_head.cpp (CPU GB/s), bench/bench_kernels_cuda.cpp (GPU GB/s, softmax_xent/*
// rows).
#pragma once
#include <cstdint>

#ifdef ENGINE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace engine {

// probs (N, K) may alias logits.
void softmax_cpu(const float* logits, float* probs, int64_t n, int64_t k);
// Returns the mean (weighted) loss; writes dlogits (N, K) when non-null. Labels are checked.
float softmax_xent_cpu(const float* logits, const int32_t* labels, const float* class_weights,
                       int64_t n, int64_t k, float* dlogits);

#ifdef ENGINE_HAVE_CUDA
// probs (N, K) may alias logits, as on the CPU.
void softmax_cuda(const float* logits, float* probs, int64_t n, int64_t k, cudaStream_t stream);
// All pointers device memory; dlogits may alias logits (in place; softmax_xent_cpu does not allow
// that) and no other pair may overlap. Writes *d_loss (and dlogits when non-null). `d_scratch`
// holds 2*n + 2 floats (per-row weighted nll and weight, then the two sums). A label outside [0, K)
// cannot throw on the device: that row's loss is NaN (and so is the batch loss).
void softmax_xent_cuda(const float* logits, const int32_t* labels, const float* class_weights,
                       int64_t n, int64_t k, float* dlogits, float* d_loss, float* d_scratch,
                       cudaStream_t stream);
#endif

}  // namespace engine
