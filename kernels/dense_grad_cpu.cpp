// kernels/dense_grad_cpu.cpp: CPU bias+ReLU forward, ReLU backward, bias gradient and the
// row-major dnnl_sgemm wrapper used by the classifier head (kernels/dense_grad.h).
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <vector>

#include "engine/error.h"
#include "kernels/dense_grad.h"

namespace engine {

void bias_act_forward_cpu(float* y, const float* b, int64_t n, int64_t c, bool relu) {
  for (int64_t i = 0; i < n; ++i) {
    float* r = y + i * c;
    if (b)
      for (int64_t j = 0; j < c; ++j) r[j] += b[j];
    if (relu)
      for (int64_t j = 0; j < c; ++j) r[j] = r[j] > 0.f ? r[j] : 0.f;
  }
}

void relu_backward_cpu(const float* dy, const float* a, float* dz, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dz[i] = a[i] > 0.f ? dy[i] : 0.f;
}

void bias_grad_cpu(const float* dy, float* db, int64_t n, int64_t c) {
  std::vector<double> acc(static_cast<size_t>(c), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) acc[j] += dy[i * c + j];
  for (int64_t j = 0; j < c; ++j) db[j] = static_cast<float>(acc[j]);
}

void sgemm_rowmajor_cpu(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                        float* c, int64_t ldc, const char* what) {
  const dnnl_status_t st =
      dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success)
    fail(what, ": dnnl_sgemm(M=", m, ", N=", n, ", K=", k, ", ta=", ta, ", tb=", tb,
         ") failed: ", dnnl_status2str(st));
}

}  // namespace engine
