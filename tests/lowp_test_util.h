// tests/lowp_test_util.h: what the bf16/int8 fidelity tests share (tests/test_inception_lowp.cpp
// against PyTorch, tests/test_keras_lowp.cpp against Keras): the cosine / relative-L2 comparison
// of a bottleneck with its reference, and bf16 rounding as the executor does it (for the
// "exact network on the rounded image" floor those tests bound each mode by).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace engine::test {

struct Fidelity {
  double cosine, rel_l2;
};

// Over n values, in double; W is float or double (the float64 references).
template <typename W>
Fidelity compare_fidelity(const float* got, const W* want, int64_t n) {
  double dot = 0, gg = 0, ww = 0, dd = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    dot += g * w, gg += g * g, ww += w * w, dd += (g - w) * (g - w);
  }
  return {dot / std::sqrt(gg * ww), std::sqrt(dd / ww)};
}

// Round to nearest even at bf16's 8 significant bits (finite inputs), kept in a float.
inline float round_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace engine::test
