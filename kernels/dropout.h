// kernels/dropout.h: inverted dropout driven by a counter-based Philox4x32-10 generator, so the
// keep/drop decision for element i of a given (seed, step, stream) is a pure function that the
// CPU and the GPU compute identically and that the backward pass simply recomputes.
//   key     = {seed low 32 bits, seed high 32 bits}
//   counter = {(i/4) low 32, (i/4) high 32, step low 32 bits, stream}
//   u       = word (i % 4) of philox4x32_10(counter, key)
//   keep(i) = u >= drop_threshold(p), drop_threshold = round(p * 2^32): P(keep) = 1 - p (exact
//             up to 2^-32); kept elements are scaled by 1/(1-p), dropped ones are 0.
// `stream` separates the two dropout layers of the head (1 and 2) at the same step.
// No mask is stored: regenerating it costs 10 integer multiply rounds per 4 elements, which is
// nothing next to the memory traffic of the op (GPU) and keeps the backward free of any saved
// state (and of a mask buffer in the arena, and of the question of which step wrote it).
// CUDA launchers read `step` from device memory so that a captured CUDA graph sees the optimizer's
// step counter advance between replays (rmsprop increments it on the device).
// Tests: tests/test_kernels_head.cpp (Philox KAT, keep statistics, Cpu/ and Cuda/DropoutKernel).
// Bench: bench/bench_head.cpp (CPU GB/s), bench/bench_kernels_cuda.cpp (GPU GB/s, dropout/* rows).
#pragma once
#include <cstdint>

#ifdef ENGINE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#if defined(__CUDACC__)
#define ENGINE_HD __host__ __device__ __forceinline__
#else
#define ENGINE_HD inline
#endif

namespace engine {

struct Philox4x32 {
  uint32_t v[4];
};

// Philox4x32-10 (Salmon et al., SC'11), the Random123 constants and key schedule.
ENGINE_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += W0;
      k1 += W1;
    }
    const uint64_t p0 = static_cast<uint64_t>(M0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(M1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    Philox4x32 o;
    o.v[0] = hi1 ^ ctr.v[1] ^ k0;
    o.v[1] = lo1;
    o.v[2] = hi0 ^ ctr.v[3] ^ k1;
    o.v[3] = lo0;
    ctr = o;
  }
  return ctr;
}

// Drop when u < threshold; p in [0, 1).
ENGINE_HD uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0 + 0.5;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// The 4 raw words for group g = i/4 (elements 4g..4g+3).
ENGINE_HD Philox4x32 dropout_words(uint64_t seed, int64_t step, uint32_t stream, uint64_t group) {
  Philox4x32 c{{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                static_cast<uint32_t>(static_cast<uint64_t>(step)), stream}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

ENGINE_HD bool dropout_keep(uint64_t seed, int64_t step, uint32_t stream, uint64_t i,
                            uint32_t thr) {
  return dropout_words(seed, step, stream, i >> 2).v[i & 3] >= thr;
}

struct DropoutKey {
  uint64_t seed = 0;
  int64_t step = 0;
  uint32_t stream = 0;
};

// y[i] = keep(i) ? x[i] / (1-p) : 0. y may alias x. p == 0 copies.
void dropout_forward_cpu(const float* x, float* y, int64_t n, float p, DropoutKey key);
// dx[i] = keep(i) ? dy[i] / (1-p) : 0 (the same mask, regenerated). dx may alias dy.
void dropout_backward_cpu(const float* dy, float* dx, int64_t n, float p, DropoutKey key);
// mask[i] = 1 if kept else 0 (for tests).
void dropout_mask_cpu(uint8_t* mask, int64_t n, float p, DropoutKey key);

#ifdef ENGINE_HAVE_CUDA
// Same contract; `d_step` points to the int64 step counter in device memory. `dropout_backward`
// is the forward applied to dy (identical arithmetic), kept as a named entry for readability.
void dropout_forward_cuda(const float* x, float* y, int64_t n, float p, uint64_t seed,
                          const int64_t* d_step, uint32_t stream_id, cudaStream_t stream);
void dropout_backward_cuda(const float* dy, float* dx, int64_t n, float p, uint64_t seed,
                           const int64_t* d_step, uint32_t stream_id, cudaStream_t stream);
#endif

}  // namespace engine
