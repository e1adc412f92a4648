// kernels/dense_cpu.cpp: fully connected layer y = x @ W + b on the CPU. dense_forward_ref_cpu is
// plain loops with double accumulation (the reference); dense_forward_cpu calls oneDNN's
// row-major dnnl_sgemm and adds the bias (the production version). Declared in kernels/dense.h.
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <vector>

#include "engine/error.h"
#include "kernels/dense.h"

namespace engine {

namespace {
void check_dense_shapes(const char* what, const Tensor& x, int64_t cout, const Tensor& y) {
  ENGINE_CHECK(x.rank() == 2, what, ": input must be (N, cin), got ", x.shape().str());
  const Shape ys{x.dim(0), cout};
  ENGINE_CHECK(y.shape() == ys, what, ": output shape ", y.shape().str(), ", expected ", ys.str());
}
}  // namespace

void dense_forward_ref_cpu(const Tensor& x, const float* w, const float* b, int64_t cout,
                           Tensor& y) {
  check_dense_shapes("dense_forward_ref_cpu", x, cout, y);
  const int64_t N = x.dim(0), K = x.dim(1);
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel
  {
    // Row of W is contiguous over cout: accumulate whole output rows so the loop vectorises.
    std::vector<double> acc(static_cast<size_t>(cout));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t o = 0; o < cout; ++o) acc[o] = b ? b[o] : 0.0;
      for (int64_t i = 0; i < K; ++i) {
        const double xv = xp[n * K + i];
        const float* wr = w + i * cout;
        for (int64_t o = 0; o < cout; ++o) acc[o] += xv * wr[o];
      }
      for (int64_t o = 0; o < cout; ++o) yp[n * cout + o] = static_cast<float>(acc[o]);
    }
  }
}

void dense_forward_cpu(const Tensor& x, const float* w, const float* b, int64_t cout, Tensor& y) {
  check_dense_shapes("dense_forward_cpu", x, cout, y);
  const int64_t N = x.dim(0), K = x.dim(1);
  // dnnl_sgemm is row-major: C(M,N) = A(M,K) @ B(K,N) with lda=K, ldb=N, ldc=N.
  dnnl_status_t st =
      dnnl_sgemm('N', 'N', N, cout, K, 1.f, x.data(), K, w, cout, 0.f, y.data(), cout);
  if (st != dnnl_success)
    fail("dense_forward_cpu: dnnl_sgemm(M=", N, ", N=", cout, ", K=", K,
         ") failed: ", dnnl_status2str(st));
  if (b) {
    float* yp = y.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < cout; ++o) yp[n * cout + o] += b[o];
  }
}

}  // namespace engine
