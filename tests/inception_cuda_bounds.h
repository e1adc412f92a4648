// tests/inception_cuda_bounds.h: how close each GPU mode's bottleneck must be to the PyTorch
// reference (float64, tests/reference/make_reference.py), shared by tests/test_inception_cuda.cpp
// and the per-mode validation of bench/bench_inception_cuda.cpp; free of gtest so the benchmark
// can include it.
//  - fp32 (both layouts): element-wise |got - want| <= kFp32AtolScale * max|want| + kFp32Rtol *
//    |want|, the bottleneck bound of tests/inception_reference.h (test_inception_cuda.cpp
//    static_asserts that the two agree).
//  - tf32 and fp16, per image: relative L2 error ||got - want|| / ||want|| and cosine similarity.
//    TF32 rounds conv inputs to 10 mantissa bits (2^-11 ~ 4.9e-4 relative per product), fp16
//    activations to 10 bits as well plus fp16 storage between layers; over 94 convs the bottleneck
//    error is expected near 1e-3 (tf32) and a few 1e-3 (fp16). The bounds below are INITIAL (about
//    10x that), to be tightened to ~3x the values the GPU run prints.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace engine::test {

constexpr double kFp32AtolScale = 1e-4, kFp32Rtol = 1e-4;
constexpr double kTf32MaxRelL2 = 1e-2, kFp16MaxRelL2 = 2e-2, kMinCosine = 0.999;

struct Agreement {
  double rel_l2 = 0, cosine = 1;
};
inline Agreement agreement(const float* got, const float* want, int64_t n) {
  double d = 0, g2 = 0, w2 = 0, gw = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    d += (g - w) * (g - w);
    g2 += g * g, w2 += w * w, gw += g * w;
  }
  return {std::sqrt(d / std::max(w2, 1e-300)), gw / std::sqrt(std::max(g2 * w2, 1e-300))};
}

// fp32: the number of elements outside the element-wise bound (0 = pass); worst gets a line.
inline int64_t fp32_bottleneck_violations(const float* got, const float* want, int64_t n,
                                          double want_max_abs, std::string* worst) {
  int64_t bad = 0;
  double worst_excess = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(double(got[i]) - want[i]);
    const double lim = kFp32AtolScale * want_max_abs + kFp32Rtol * std::fabs(want[i]);
    if (diff <= lim) continue;  // NaN falls through: a violation
    ++bad;
    const double excess = std::isnan(diff) ? INFINITY : diff - lim;
    if (excess > worst_excess && worst) {
      worst_excess = excess;
      *worst = "element " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs reference " +
               std::to_string(want[i]) + " (bound " + std::to_string(lim) + ")";
    }
  }
  return bad;
}

}  // namespace engine::test
