// kernels/rmsprop_cuda.cu: the fused RMSProp update on the GPU (kernels/rmsprop.h): one
// grid-stride kernel over the whole arena, the learning rate computed on the device from the step
// counter in device memory, then a 1-thread kernel increments the counter (stream-ordered, so the
// pair can live in a CUDA graph). Element arithmetic mirrors rmsprop_cpu.cpp with explicit
// __fmaf_rn/__fmul_rn/__fadd_rn/__fsqrt_rn/__fdiv_rn so nvcc cannot contract it differently.
#include "engine/cuda_check.h"
#include "kernels/rmsprop.h"

namespace engine {

struct RmsPropDeviceParams {
  int tf1;
  double lr0, decay_rate;
  int64_t decay_steps;
  int staircase;
  float rho, one_m_rho, m, eps;
};

__device__ __forceinline__ float device_lr(const RmsPropDeviceParams& c, int64_t step) {
  if (c.decay_steps <= 0 || c.decay_rate == 1.0) return static_cast<float>(c.lr0);
  double e = static_cast<double>(step) / static_cast<double>(c.decay_steps);
  if (c.staircase) e = floor(e);
  return static_cast<float>(c.lr0 * pow(c.decay_rate, e));
}

__global__ void rmsprop_fused_kernel(float* __restrict__ p, const float* __restrict__ g,
                                     float* __restrict__ ms, float* __restrict__ mom, int64_t n,
                                     RmsPropDeviceParams c, const int64_t* __restrict__ d_step) {
  const float lr = device_lr(c, *d_step);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float gi = g[i];
    if (c.tf1) {
      const float msi = __fmaf_rn(__fmaf_rn(gi, gi, -ms[i]), c.one_m_rho, ms[i]);
      const float upd = __fdiv_rn(__fmul_rn(lr, gi), __fsqrt_rn(__fadd_rn(msi, c.eps)));
      const float mi = __fmaf_rn(c.m, mom[i], upd);
      ms[i] = msi;
      mom[i] = mi;
      p[i] = __fsub_rn(p[i], mi);
    } else {
      const float vi = __fmaf_rn(c.rho, ms[i], __fmul_rn(__fmul_rn(c.one_m_rho, gi), gi));
      const float upd = __fdiv_rn(gi, __fadd_rn(__fsqrt_rn(vi), c.eps));
      const float bi = __fmaf_rn(c.m, mom[i], upd);
      ms[i] = vi;
      mom[i] = bi;
      p[i] = __fmaf_rn(-lr, bi, p[i]);
    }
  }
}

__global__ void step_increment_kernel(int64_t* d_step) { *d_step += 1; }

void rmsprop_update_cuda(float* params, const float* grads, float* ms, float* mom, int64_t n,
                         const RmsPropConfig& c, int64_t* d_step, cudaStream_t stream) {
  ENGINE_CHECK(n >= 0 && d_step, "rmsprop_update_cuda: bad arguments (n ", n, ")");
  ENGINE_CHECK(c.rho >= 0 && c.rho < 1 && c.eps > 0 && c.momentum >= 0,
               "rmsprop_update_cuda: bad hyper-parameters rho ", c.rho, " eps ", c.eps,
               " momentum ", c.momentum);
  RmsPropDeviceParams d{c.formula == RmsPropFormula::TF1 ? 1 : 0,
                        c.lr,
                        c.decay_rate,
                        c.decay_steps,
                        c.staircase ? 1 : 0,
                        static_cast<float>(c.rho),
                        static_cast<float>(1.0 - c.rho),
                        static_cast<float>(c.momentum),
                        static_cast<float>(c.eps)};
  if (n > 0) {
    const int threads = 256;
    const int64_t want = (n + threads - 1) / threads;
    const unsigned blocks = static_cast<unsigned>(want < 4096 ? want : 4096);
    rmsprop_fused_kernel<<<blocks, threads, 0, stream>>>(params, grads, ms, mom, n, d, d_step);
    KERNEL_LAUNCH_CHECK("rmsprop_update_cuda: update");
  }
  step_increment_kernel<<<1, 1, 0, stream>>>(d_step);
  KERNEL_LAUNCH_CHECK("rmsprop_update_cuda: step increment");
}

}  // namespace engine
