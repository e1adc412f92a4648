// kernels/pool2d_cuda.cu: pooling, strided copy and global average pool kernels; see the header.
#include "kernels/pool2d_cuda.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>

#include "engine/cuda_check.h"
#include "engine/error.h"

namespace engine {

StridedView packed_view(void* data, DType dtype, TensorLayout layout, int64_t n, int64_t h,
                        int64_t w, int64_t c) {
  return channel_slice(data, dtype, layout, n, h, w, c, 0, c);
}

StridedView channel_slice(void* data, DType dtype, TensorLayout layout, int64_t n, int64_t h,
                          int64_t w, int64_t c_total, int64_t c_off, int64_t c_count) {
  ENGINE_CHECK(c_off >= 0 && c_count > 0 && c_off + c_count <= c_total, "channel_slice: [", c_off,
               ", ", c_off + c_count, ") out of ", c_total, " channels");
  StridedView v;
  v.dtype = dtype;
  v.n = n, v.h = h, v.w = w, v.c = c_count;
  int64_t off;
  if (layout == TensorLayout::NHWC) {
    v.st = {h * w * c_total, w * c_total, c_total, 1};
    off = c_off;
  } else {
    v.st = {c_total * h * w, w, 1, h * w};
    off = c_off * h * w;
  }
  v.data = static_cast<char*>(data) + off * static_cast<int64_t>(dtype_bytes(dtype));
  return v;
}

namespace {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}

struct Dims4 {
  int64_t n, h, w, c;
};

// Grid-stride loops: this thread's first linear index, and the distance to its next one.
__device__ __forceinline__ int64_t grid_first() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }

// The index along the fastest-varying dimension left in `i` (of `extent`), which is then divided
// out of `i`.
__device__ __forceinline__ int64_t peel(int64_t& i, int64_t extent) {
  const int64_t r = i % extent;
  i /= extent;
  return r;
}

// Linear output index -> (n, h, w, c), in the output's memory order.
__device__ __forceinline__ void unflatten(int64_t i, const Dims4& d, bool c_fastest, int64_t& n,
                                          int64_t& h, int64_t& w, int64_t& c) {
  if (c_fastest) {
    c = peel(i, d.c);
    w = peel(i, d.w);
    h = peel(i, d.h);
  } else {
    w = peel(i, d.w);
    h = peel(i, d.h);
    c = peel(i, d.c);
  }
  n = i;
}

template <typename T, bool kMax>
__global__ void pool2d_kernel(const T* __restrict__ x, Strides4 xs, int64_t H, int64_t W,
                              T* __restrict__ y, Strides4 ys, Dims4 yd, bool c_fastest, int k,
                              int stride, int pad_top, int pad_left) {
  const int64_t total = yd.n * yd.h * yd.w * yd.c;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    int64_t n, oh, ow, c;
    unflatten(i, yd, c_fastest, n, oh, ow, c);
    const int64_t h0 = oh * stride - pad_top, w0 = ow * stride - pad_left;
    float acc = kMax ? -FLT_MAX : 0.f;
    int count = 0;
    for (int dh = 0; dh < k; ++dh) {
      const int64_t ih = h0 + dh;
      if (ih < 0 || ih >= H) continue;
      for (int dw = 0; dw < k; ++dw) {
        const int64_t iw = w0 + dw;
        if (iw < 0 || iw >= W) continue;
        const float v = to_f(x[n * xs.n + ih * xs.h + iw * xs.w + c * xs.c]);
        if (kMax)
          acc = fmaxf(acc, v);
        else
          acc += v;
        ++count;
      }
    }
    if (!kMax) acc = count > 0 ? acc / static_cast<float>(count) : 0.f;  // TF: valid cells only
    y[n * ys.n + oh * ys.h + ow * ys.w + c * ys.c] = from_f<T>(acc);
  }
}

template <typename TS, typename TD>
__global__ void copy_strided_kernel(const TS* __restrict__ x, Strides4 xs, TD* __restrict__ y,
                                    Strides4 ys, Dims4 d, bool c_fastest) {
  const int64_t total = d.n * d.h * d.w * d.c;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    int64_t n, h, w, c;
    unflatten(i, d, c_fastest, n, h, w, c);
    y[n * ys.n + h * ys.h + w * ys.w + c * ys.c] =
        from_f<TD>(to_f(x[n * xs.n + h * xs.h + w * xs.w + c * xs.c]));
  }
}

// One thread per (n, c), consecutive threads take consecutive c (coalesced reads in NHWC).
template <typename T>
__global__ void global_avg_pool_kernel(const T* __restrict__ x, Strides4 xs, Dims4 d,
                                       float* __restrict__ y) {
  const int64_t total = d.n * d.c;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t c = i % d.c, n = i / d.c;
    float acc = 0.f;
    for (int64_t h = 0; h < d.h; ++h)
      for (int64_t w = 0; w < d.w; ++w) acc += to_f(x[n * xs.n + h * xs.h + w * xs.w + c * xs.c]);
    y[i] = acc / static_cast<float>(d.h * d.w);
  }
}

constexpr int kThreads = 256;
unsigned blocks_for(int64_t total) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20)));
}

template <bool kMax>
void pool2d_launch(const StridedView& x, const StridedView& y, int k, int stride, Padding p,
                   cudaStream_t stream, const std::string& ctx) {
  ENGINE_CHECK(x.dtype == y.dtype, ctx, ": pool input and output dtypes differ");
  const PadInfo ph = tf_padding(x.h, k, stride, p), pw = tf_padding(x.w, k, stride, p);
  ENGINE_CHECK(y.n == x.n && y.c == x.c && y.h == ph.out && y.w == pw.out, ctx, ": pool output (",
               y.n, ", ", y.h, ", ", y.w, ", ", y.c, ") does not match input (", x.n, ", ", x.h,
               ", ", x.w, ", ", x.c, ") with k=", k, " s=", stride, " ", padding_name(p));
  const Dims4 yd{y.n, y.h, y.w, y.c};
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  const bool cf = y.st.c == 1;
  if (x.dtype == DType::F32)
    pool2d_kernel<float, kMax><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const float*>(x.data), x.st, x.h, x.w, static_cast<float*>(y.data), y.st, yd,
        cf, k, stride, static_cast<int>(ph.before), static_cast<int>(pw.before));
  else
    pool2d_kernel<__half, kMax><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const __half*>(x.data), x.st, x.h, x.w, static_cast<__half*>(y.data), y.st, yd,
        cf, k, stride, static_cast<int>(ph.before), static_cast<int>(pw.before));
  KERNEL_LAUNCH_CHECK(ctx);
}

}  // namespace

void max_pool2d_cuda(const StridedView& x, const StridedView& y, int k, int stride, Padding p,
                     cudaStream_t stream, const std::string& ctx) {
  pool2d_launch<true>(x, y, k, stride, p, stream, ctx);
}

void avg_pool2d_cuda(const StridedView& x, const StridedView& y, int k, int stride, Padding p,
                     cudaStream_t stream, const std::string& ctx) {
  pool2d_launch<false>(x, y, k, stride, p, stream, ctx);
}

void copy_strided_cuda(const StridedView& src, const StridedView& dst, cudaStream_t stream,
                       const std::string& ctx) {
  ENGINE_CHECK(src.n == dst.n && src.h == dst.h && src.w == dst.w && src.c == dst.c, ctx,
               ": copy between shapes (", src.n, ", ", src.h, ", ", src.w, ", ", src.c, ") and (",
               dst.n, ", ", dst.h, ", ", dst.w, ", ", dst.c, ")");
  const Dims4 d{dst.n, dst.h, dst.w, dst.c};
  const int64_t total = d.n * d.h * d.w * d.c;
  if (total == 0) return;
  const bool cf = dst.st.c == 1;
  const unsigned b = blocks_for(total);
  if (src.dtype == DType::F32 && dst.dtype == DType::F32)
    copy_strided_kernel<float, float><<<b, kThreads, 0, stream>>>(
        static_cast<const float*>(src.data), src.st, static_cast<float*>(dst.data), dst.st, d, cf);
  else if (src.dtype == DType::F32 && dst.dtype == DType::F16)
    copy_strided_kernel<float, __half><<<b, kThreads, 0, stream>>>(
        static_cast<const float*>(src.data), src.st, static_cast<__half*>(dst.data), dst.st, d, cf);
  else if (src.dtype == DType::F16 && dst.dtype == DType::F32)
    copy_strided_kernel<__half, float><<<b, kThreads, 0, stream>>>(
        static_cast<const __half*>(src.data), src.st, static_cast<float*>(dst.data), dst.st, d, cf);
  else
    copy_strided_kernel<__half, __half>
        <<<b, kThreads, 0, stream>>>(static_cast<const __half*>(src.data), src.st,
                                     static_cast<__half*>(dst.data), dst.st, d, cf);
  KERNEL_LAUNCH_CHECK(ctx);
}

void global_avg_pool_cuda(const StridedView& x, float* y, cudaStream_t stream,
                          const std::string& ctx) {
  const Dims4 d{x.n, x.h, x.w, x.c};
  const int64_t total = x.n * x.c;
  if (total == 0) return;
  ENGINE_CHECK(x.h * x.w > 0, ctx, ": global average pool of an empty image");
  if (x.dtype == DType::F32)
    global_avg_pool_kernel<float>
        <<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const float*>(x.data), x.st, d, y);
  else
    global_avg_pool_kernel<__half><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const __half*>(x.data), x.st, d, y);
  KERNEL_LAUNCH_CHECK(ctx);
}

}  // namespace engine
