// kernels/rmsprop.h: one fused RMSProp update over a whole parameter arena (params, grads, ms,
// mom: contiguous float arrays of the same length), with the learning rate computed from the
// optimizer's step counter:  lr_t = lr0 * rate^(e),  e = step/decay_steps (floor(...) when
// staircase; tf.train.exponential_decay; the first update uses step 0), then step += 1.
// Two formulas (sources and derivations: docs/TRAINING.md):
//   TF1   (tf.train.RMSPropOptimizer; ms starts at ONE, eps inside the sqrt, lr in the momentum):
//           ms  = ms + (g*g - ms)*(1-rho);  mom = momentum*mom + lr*g/sqrt(ms+eps);  p -= mom
//   Torch (torch.optim.RMSprop; square_avg starts at ZERO, eps outside the sqrt):
//           v = alpha*v + (1-alpha)*g*g;  buf = momentum*buf + g/(sqrt(v)+eps);  p -= lr*buf
//           (with momentum == 0 torch does p -= lr*g/(sqrt(v)+eps): same numbers, buf unused = 0)
// Arithmetic order is fixed with explicit fmaf so the compiler cannot contract differently on the
// CPU (gcc -ffp-contract=fast by default in gnu++ mode) and on the GPU (nvcc contracts by default);
// the CUDA kernel uses the same fmaf/__fsqrt_rn/__fdiv_rn sequence, so the twins are bit-identical
// given the same lr. lr is computed in double (pow) and rounded to float once, on both sides.
// Tests: tests/test_kernels_head.cpp (the formulas in double, lr decay closed forms, Cpu/ and
// Cuda/RmsPropKernel: bitwise twins). Bench: bench/bench_head.cpp (CPU GB/s),
// bench/bench_kernels_cuda.cpp (GPU GB/s, rmsprop/* rows).
#pragma once
#include <cstdint>

#ifdef ENGINE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace engine {

enum class RmsPropFormula { TF1, Torch };

struct RmsPropConfig {
  RmsPropFormula formula = RmsPropFormula::TF1;
  double lr = 1e-3;
  double rho = 0.9;  // TF1 `decay`, torch `alpha`
  double momentum = 0.0;
  double eps = 1e-10;       // TF1 default; torch's default is 1e-8 (see default_eps)
  double decay_rate = 1.0;  // 1.0 (or decay_steps <= 0): constant learning rate
  int64_t decay_steps = 0;
  bool staircase = false;
  static double default_eps(RmsPropFormula f) { return f == RmsPropFormula::TF1 ? 1e-10 : 1e-8; }
  // Initial value of the `ms` slot: 1 for TF1, 0 for torch.
  float ms_init() const { return formula == RmsPropFormula::TF1 ? 1.f : 0.f; }
};

// lr for a given step (float, as used by the update), exponential decay as above.
float rmsprop_learning_rate(const RmsPropConfig& c, int64_t step);

// Updates params/ms/mom in place from grads using lr(*step), then increments *step.
void rmsprop_update_cpu(float* params, const float* grads, float* ms, float* mom, int64_t n,
                        const RmsPropConfig& c, int64_t* step);

#ifdef ENGINE_HAVE_CUDA
// Same update on device arrays; `d_step` is the int64 step counter in device memory: the update
// kernel reads it (lr computed on the device) and a 1-thread kernel in the same stream increments
// it afterwards, so the pair can be captured in a CUDA graph and replayed.
void rmsprop_update_cuda(float* params, const float* grads, float* ms, float* mom, int64_t n,
                         const RmsPropConfig& c, int64_t* d_step, cudaStream_t stream);
#endif

}  // namespace engine
