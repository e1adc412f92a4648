// kernels/dropout_cpu.cpp: CPU inverted dropout (forward, backward, mask) over Philox4x32-10;
// the generator and the keep rule live in kernels/dropout.h and are shared with the CUDA kernel,
// so CPU and GPU masks are bit-identical. Processes 4 elements per Philox call.
#include "kernels/dropout.h"

#include "engine/error.h"

namespace engine {

namespace {
template <typename F>
void for_each_kept(int64_t n, float p, DropoutKey key, const char* what, F&& f) {
  ENGINE_CHECK(p >= 0.f && p < 1.f, what, ": dropout rate must be in [0, 1), got ", p);
  ENGINE_CHECK(n >= 0, what, ": negative length ", n);
  const uint32_t thr = dropout_threshold(p);
  const int64_t groups = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t g = 0; g < groups; ++g) {
    const Philox4x32 r = dropout_words(key.seed, key.step, key.stream, static_cast<uint64_t>(g));
    const int64_t base = g * 4;
    for (int j = 0; j < 4 && base + j < n; ++j) f(base + j, r.v[j] >= thr);
  }
}
}  // namespace

void dropout_forward_cpu(const float* x, float* y, int64_t n, float p, DropoutKey key) {
  const float scale = 1.f / (1.f - p);
  for_each_kept(n, p, key, "dropout_forward_cpu",
                [&](int64_t i, bool keep) { y[i] = keep ? x[i] * scale : 0.f; });
}

void dropout_backward_cpu(const float* dy, float* dx, int64_t n, float p, DropoutKey key) {
  const float scale = 1.f / (1.f - p);
  for_each_kept(n, p, key, "dropout_backward_cpu",
                [&](int64_t i, bool keep) { dx[i] = keep ? dy[i] * scale : 0.f; });
}

void dropout_mask_cpu(uint8_t* mask, int64_t n, float p, DropoutKey key) {
  for_each_kept(n, p, key, "dropout_mask_cpu",
                [&](int64_t i, bool keep) { mask[i] = keep ? 1 : 0; });
}

}  // namespace engine
