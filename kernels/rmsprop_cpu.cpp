// kernels/rmsprop_cpu.cpp: the CPU twin of the fused RMSProp update (kernels/rmsprop.h); the
// per-element arithmetic is written once in rmsprop_element.h-style inline functions below and
// mirrored operation for operation in rmsprop_cuda.cu.
#include <cmath>

#include "engine/error.h"
#include "kernels/rmsprop.h"

namespace engine {

float rmsprop_learning_rate(const RmsPropConfig& c, int64_t step) {
  if (c.decay_steps <= 0 || c.decay_rate == 1.0) return static_cast<float>(c.lr);
  double e = static_cast<double>(step) / static_cast<double>(c.decay_steps);
  if (c.staircase) e = std::floor(e);
  return static_cast<float>(c.lr * std::pow(c.decay_rate, e));
}

void rmsprop_update_cpu(float* p, const float* g, float* ms, float* mom, int64_t n,
                        const RmsPropConfig& c, int64_t* step) {
  ENGINE_CHECK(n >= 0 && step, "rmsprop_update_cpu: bad arguments (n ", n, ")");
  ENGINE_CHECK(c.rho >= 0 && c.rho < 1 && c.eps > 0 && c.momentum >= 0,
               "rmsprop_update_cpu: bad hyper-parameters rho ", c.rho, " eps ", c.eps, " momentum ",
               c.momentum);
  const float lr = rmsprop_learning_rate(c, *step);
  const float rho = static_cast<float>(c.rho), one_m_rho = static_cast<float>(1.0 - c.rho);
  const float m = static_cast<float>(c.momentum), eps = static_cast<float>(c.eps);
  if (c.formula == RmsPropFormula::TF1) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float msi = std::fmaf(std::fmaf(gi, gi, -ms[i]), one_m_rho, ms[i]);
      const float upd = (lr * gi) / std::sqrt(msi + eps);
      const float mi = std::fmaf(m, mom[i], upd);
      ms[i] = msi;
      mom[i] = mi;
      p[i] = p[i] - mi;
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float vi = std::fmaf(rho, ms[i], (one_m_rho * gi) * gi);
      const float upd = gi / (std::sqrt(vi) + eps);
      const float bi = std::fmaf(m, mom[i], upd);
      ms[i] = vi;
      mom[i] = bi;
      p[i] = std::fmaf(-lr, bi, p[i]);
    }
  }
  *step += 1;
}

}  // namespace engine
