// kernels/softmax_xent_cuda.cu: CUDA softmax and fused softmax + cross-entropy (kernels/
// softmax_xent.h). One warp per row for any K (lanes stride over classes, shuffles reduce max and
// sum); the weighted batch mean is reduced by one block in a fixed order (deterministic, no
// atomics); a third kernel scales (p - onehot) by w[y]/sum w. Matches the CPU twin to float
// rounding (expf/logf differ from glibc in the last ulp), not bit for bit. probs / dlogits may
// alias the logits (in place); tests/test_softmax_cuda.cpp checks that in place equals out of
// place bit for bit.
#include <cmath>

#include "engine/cuda_check.h"
#include "kernels/softmax_xent.h"

namespace engine {

namespace {
constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
}  // namespace

// Row softmax; when labels != nullptr also writes row_terms[2i] = w[y]*(lse - z[y]) and
// row_terms[2i+1] = w[y]. probs may be nullptr (loss only) and may alias z (the header allows
// it): so neither is __restrict__, every read of a row (max, sum, z[y]) happens before the warp's
// first write to it (the shuffles of warp_sum order them), and each lane writes only the elements
// it read itself.
__global__ void softmax_rows_kernel(const float* z, float* probs, int64_t n, int64_t k,
                                    const int32_t* __restrict__ labels, const float* __restrict__ w,
                                    float* __restrict__ row_terms) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n) return;
  const float* zr = z + row * k;
  float m = -INFINITY;
  for (int64_t j = lane; j < k; j += 32) m = fmaxf(m, zr[j]);
  m = warp_max(m);
  float s = 0.f;
  for (int64_t j = lane; j < k; j += 32) s += expf(zr[j] - m);
  s = warp_sum(s);
  if (labels && lane == 0) {  // before the probabilities overwrite z[y] when they alias z
    const int32_t y = labels[row];
    if (y < 0 || y >= k) {
      row_terms[2 * row] = NAN;
      row_terms[2 * row + 1] = 1.f;
    } else {
      const float wy = w ? w[y] : 1.f;
      row_terms[2 * row] = wy * (m + logf(s) - zr[y]);
      row_terms[2 * row + 1] = wy;
    }
  }
  __syncwarp();  // lane 0's read of z[y] precedes another lane's write of probs[y]
  if (probs) {
    const float inv = 1.f / s;
    for (int64_t j = lane; j < k; j += 32) probs[row * k + j] = expf(zr[j] - m) * inv;
  }
}

// One block: sums[0] = sum of weighted nll, sums[1] = sum of weights (double, fixed order).
__global__ void xent_reduce_kernel(const float* __restrict__ row_terms, int64_t n,
                                   float* __restrict__ sums, float* __restrict__ loss) {
  __shared__ double sn[256], sd[256];
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    a += row_terms[2 * i];
    b += row_terms[2 * i + 1];
  }
  sn[threadIdx.x] = a;
  sd[threadIdx.x] = b;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sn[threadIdx.x] += sn[threadIdx.x + s];
      sd[threadIdx.x] += sd[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[0] = static_cast<float>(sn[0]);
    sums[1] = static_cast<float>(sd[0]);
    *loss = static_cast<float>(sn[0] / sd[0]);
  }
}

// g = w[y] * (p - onehot) / sum w, in place over the probabilities.
__global__ void xent_grad_kernel(float* g, const int32_t* __restrict__ labels,
                                 const float* __restrict__ w, const float* __restrict__ sums,
                                 int64_t n, int64_t k) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * k) return;
  const int64_t i = idx / k, j = idx % k;
  const int32_t y = labels[i];
  const float wy = (y >= 0 && y < k) ? (w ? w[y] : 1.f) : NAN;
  const float inv = static_cast<float>(1.0 / static_cast<double>(sums[1]));
  g[idx] = (g[idx] - (j == y ? 1.f : 0.f)) * (wy * inv);
}

void softmax_cuda(const float* logits, float* probs, int64_t n, int64_t k, cudaStream_t stream) {
  ENGINE_CHECK(n >= 0 && k >= 1, "softmax_cuda: bad shape (", n, ", ", k, ")");
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  softmax_rows_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(logits, probs, n, k, nullptr,
                                                                  nullptr, nullptr);
  KERNEL_LAUNCH_CHECK("softmax_cuda");
}

void softmax_xent_cuda(const float* logits, const int32_t* labels, const float* class_weights,
                       int64_t n, int64_t k, float* dlogits, float* d_loss, float* d_scratch,
                       cudaStream_t stream) {
  ENGINE_CHECK(n >= 1 && k >= 1, "softmax_xent_cuda: bad shape (", n, ", ", k, ")");
  const unsigned blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  softmax_rows_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(logits, dlogits, n, k, labels,
                                                                  class_weights, d_scratch);
  KERNEL_LAUNCH_CHECK("softmax_xent_cuda: rows");
  xent_reduce_kernel<<<1, 256, 0, stream>>>(d_scratch, n, d_scratch + 2 * n, d_loss);
  KERNEL_LAUNCH_CHECK("softmax_xent_cuda: reduce");
  if (dlogits) {
    const int64_t total = n * k;
    xent_grad_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(
        dlogits, labels, class_weights, d_scratch + 2 * n, n, k);
    KERNEL_LAUNCH_CHECK("softmax_xent_cuda: grad");
  }
}

}  // namespace engine
