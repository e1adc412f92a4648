// kernels/dense_grad_cuda.cu: CUDA twins of kernels/dense_grad_cpu.cpp. GEMMs through cuBLAS
// with the row-major trick: a row-major matrix is the column-major storage of its transpose, so
// row-major C(M,N) = op(A) @ op(B) is column-major C^T(N,M) = op(B)^T' @ op(A)^T', i.e.
// cublasSgemm(opB, opA, N, M, K, B, ldb, A, lda, C, ldc) with the same leading dimensions (the
// row lengths) and the same transpose flags. The bias gradient is one thread per column summing
// down the rows in a fixed order (deterministic; N is a batch, so this is cheap).
#include "engine/cuda_check.h"
#include "kernels/dense_grad.h"

namespace engine {

__global__ void bias_act_kernel(float* y, const float* __restrict__ b, int64_t n, int64_t c,
                                int relu) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * c) return;
  float v = y[i];
  if (b) v = __fadd_rn(v, b[i % c]);
  if (relu) v = v > 0.f ? v : 0.f;
  y[i] = v;
}

__global__ void relu_backward_kernel(const float* dy, const float* __restrict__ a, float* dz,
                                     int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) dz[i] = a[i] > 0.f ? dy[i] : 0.f;
}

__global__ void bias_grad_kernel(const float* __restrict__ dy, float* __restrict__ db, int64_t n,
                                 int64_t c) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += dy[i * c + j];
  db[j] = static_cast<float>(acc);
}

namespace {
unsigned blocks_for(int64_t count, int threads) {
  return static_cast<unsigned>((count + threads - 1) / threads);
}
}  // namespace

void bias_act_forward_cuda(float* y, const float* b, int64_t n, int64_t c, bool relu,
                           cudaStream_t stream) {
  if (n * c == 0) return;
  bias_act_kernel<<<blocks_for(n * c, 256), 256, 0, stream>>>(y, b, n, c, relu ? 1 : 0);
  KERNEL_LAUNCH_CHECK("bias_act_forward_cuda");
}

void relu_backward_cuda(const float* dy, const float* a, float* dz, int64_t count,
                        cudaStream_t stream) {
  if (count == 0) return;
  relu_backward_kernel<<<blocks_for(count, 256), 256, 0, stream>>>(dy, a, dz, count);
  KERNEL_LAUNCH_CHECK("relu_backward_cuda");
}

void bias_grad_cuda(const float* dy, float* db, int64_t n, int64_t c, cudaStream_t stream) {
  if (c == 0) return;
  bias_grad_kernel<<<blocks_for(c, 128), 128, 0, stream>>>(dy, db, n, c);
  KERNEL_LAUNCH_CHECK("bias_grad_cuda");
}

void sgemm_rowmajor_cuda(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float beta, float* c, int64_t ldc, const char* what) {
  ENGINE_CHECK(m < (1LL << 31) && n < (1LL << 31) && k < (1LL << 31), what,
               ": GEMM too large for cublasSgemm (", m, "x", n, "x", k, ")");
  CUBLAS_CHECK(
      cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                  static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                  static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)),
      what);
}

}  // namespace engine
