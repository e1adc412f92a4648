// kernels/dense_grad.h: the pieces of a dense layer's training pass that kernels/dense.h lacks:
// bias add (+ optional ReLU) fused, ReLU backward, the bias gradient (column sums), and the three
// row-major GEMMs of forward/backward with Keras layout W (in, out):
//   forward  y  = x @ W             (N,in)@(in,out)
//   dW       = x^T @ dy             (in,N)@(N,out)      (beta 0: overwrite, or 1: accumulate)
//   dx       = dy @ W^T             (N,out)@(out,in)
// CPU GEMMs call oneDNN's dnnl_sgemm (already linked for the convolutions). Deliberately NOT
// OpenBLAS: it would start its own pthread pool beside oneDNN's OpenMP one and the two would fight
// over the 2 cores. GPU GEMMs call cublasSgemm on the same row-major buffers (see
// dense_grad_cuda.cu). Tests: tests/test_kernels_head.cpp (GradCheck.DenseBiasReluBackward: finite
// differences; Cpu/ and Cuda/DenseGradKernel). Bench: bench/bench_kernels_cuda.cpp (dense_grad/*
// rows), bench/bench_head.cpp (the CPU head step).
#pragma once
#include <cstdint>

#ifdef ENGINE_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace engine {

// y (N, C) += b (C); then y = max(y, 0) when relu.
void bias_act_forward_cpu(float* y, const float* b, int64_t n, int64_t c, bool relu);
// dz = dy * (a > 0) where a is the ReLU output (dz may alias dy).
void relu_backward_cpu(const float* dy, const float* a, float* dz, int64_t count);
// db (C) = sum over rows of dy (N, C); accumulated in double, fixed order.
void bias_grad_cpu(const float* dy, float* db, int64_t n, int64_t c);

// Row-major C(M,N) = alpha * op(A) @ op(B) + beta * C, op = transpose when ta/tb; lda/ldb/ldc are
// the row lengths of the stored matrices. Throws naming `what` on failure.
void sgemm_rowmajor_cpu(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                        float* c, int64_t ldc, const char* what);

#ifdef ENGINE_HAVE_CUDA
void bias_act_forward_cuda(float* y, const float* b, int64_t n, int64_t c, bool relu,
                           cudaStream_t stream);
void relu_backward_cuda(const float* dy, const float* a, float* dz, int64_t count,
                        cudaStream_t stream);
void bias_grad_cuda(const float* dy, float* db, int64_t n, int64_t c, cudaStream_t stream);
// Same contract as sgemm_rowmajor_cpu on device pointers; uses the handle's stream.
void sgemm_rowmajor_cuda(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float beta, float* c, int64_t ldc, const char* what);
#endif

}  // namespace engine
