// kernels/softmax_xent_cpu.cpp: CPU softmax and fused softmax + cross-entropy (forward loss and
// dlogits in one pass), max-subtracted so logits of 1e4 stay finite. See kernels/softmax_xent.h.
#include "kernels/softmax_xent.h"

#include <cmath>
#include <vector>

#include "engine/error.h"

namespace engine {

namespace {
// Writes p = softmax(z) for one row, returns lse = max + log(sum exp(z - max)).
float softmax_row(const float* z, float* p, int64_t k) {
  float m = z[0];
  for (int64_t j = 1; j < k; ++j) m = std::fmax(m, z[j]);
  float s = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    p[j] = std::exp(z[j] - m);
    s += p[j];
  }
  const float inv = 1.f / s;
  for (int64_t j = 0; j < k; ++j) p[j] *= inv;
  return m + std::log(s);
}
}  // namespace

void softmax_cpu(const float* logits, float* probs, int64_t n, int64_t k) {
  ENGINE_CHECK(n >= 0 && k >= 1, "softmax_cpu: bad shape (", n, ", ", k, ")");
  for (int64_t i = 0; i < n; ++i) softmax_row(logits + i * k, probs + i * k, k);
}

float softmax_xent_cpu(const float* logits, const int32_t* labels, const float* w, int64_t n,
                       int64_t k, float* dlogits) {
  ENGINE_CHECK(n >= 1 && k >= 1, "softmax_xent_cpu: bad shape (", n, ", ", k, ")");
  std::vector<float> prow(static_cast<size_t>(k));
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = labels[i];
    ENGINE_CHECK(y >= 0 && y < k, "softmax_xent_cpu: label ", y, " of row ", i, " outside [0, ", k,
                 ")");
    const float* z = logits + i * k;
    float* p = dlogits ? dlogits + i * k : prow.data();
    const float lse = softmax_row(z, p, k);
    const float wy = w ? w[y] : 1.f;
    num += static_cast<double>(wy) * static_cast<double>(lse - z[y]);
    den += wy;
  }
  ENGINE_CHECK(den > 0, "softmax_xent_cpu: the class weights of the batch sum to ", den);
  if (dlogits) {
    const float inv = static_cast<float>(1.0 / den);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t y = labels[i];
      const float s = (w ? w[y] : 1.f) * inv;
      float* g = dlogits + i * k;
      g[y] -= 1.f;
      for (int64_t j = 0; j < k; ++j) g[j] *= s;
    }
  }
  return static_cast<float>(num / den);
}

}  // namespace engine
