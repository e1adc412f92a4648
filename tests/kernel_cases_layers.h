// tests/kernel_cases_layers.h: the case tables of the layer kernels: conv2d (Conv2dCpu / cuDNN
// Conv2dCudnn), pool2d (max, average, channel concat, global average; kernels/pool2d_cuda.h on
// the GPU) and resize (CPU only: no CUDA twin yet). Same family contract as tests/kernel_cases.h
// (read its header first). The GPU rows add precisions (fp32, tf32, fp16) and layouts (NHWC, NCHW)
// to the CPU rows, which are fp32 NHWC. Used by tests/test_kernels_layers.cpp and
// bench/bench_kernels_cuda.cpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/conv2d.h"
#include "kernels/pool2d.h"
#include "kernels/resize.h"
#include "tests/kernel_cases.h"

namespace engine::kernel_cases {

// GPU number formats of a case (the CPU runs fp32 NHWC): mirrors Precision/TensorLayout of
// kernels/conv2d_cudnn.h, which only CUDA builds can include.
enum class GpuFormat { Fp32Nhwc, Fp32Nchw, Tf32Nhwc, Tf32Nchw, Fp16Nhwc, Fp16Nchw };
inline const char* gpu_format_name(GpuFormat f) {
  static const char* n[] = {"fp32_nhwc", "fp32_nchw", "tf32_nhwc",
                            "tf32_nchw", "fp16_nhwc", "fp16_nchw"};
  return n[static_cast<int>(f)];
}
inline bool is_fp16(GpuFormat f) { return f == GpuFormat::Fp16Nhwc || f == GpuFormat::Fp16Nchw; }
inline bool is_tf32(GpuFormat f) { return f == GpuFormat::Tf32Nhwc || f == GpuFormat::Tf32Nchw; }
inline bool is_nchw(GpuFormat f) {
  return f == GpuFormat::Fp32Nchw || f == GpuFormat::Tf32Nchw || f == GpuFormat::Fp16Nchw;
}
inline double format_bytes(GpuFormat f) { return is_fp16(f) ? 2.0 : 4.0; }

// A Tensor of uniform [-1, 1) values rounded to multiples of 1/1024: exact in fp16 too, so a
// GPU fp16 run sees the very inputs the fp32 oracle saw.
inline Tensor grid_tensor(Shape s, uint64_t seed) {
  Tensor t(std::move(s));
  const std::vector<float> v = uniform(t.numel(), seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::round(v[size_t(i)] * 1024.f) / 1024.f;
  return t;
}
inline std::vector<float> to_vector(const Tensor& t) {
  return std::vector<float>(t.data(), t.data() + t.numel());
}
inline double max_abs_of(const std::vector<float>& v) {
  double m = 0;
  for (float e : v) m = std::max(m, double(std::fabs(e)));
  return m;
}

// ---- conv2d: conv + bias + ReLU, TF padding ---------------------------------------------------
struct Conv2dCase {
  std::string name;
  int64_t n, h, w, cin, cout;
  Conv2dSpec spec;
  GpuFormat format;
  Shape x_shape() const { return Shape{n, h, w, cin}; }
  Shape y_shape() const { return conv2d_output_shape(x_shape(), cout, spec); }
  double bytes() const {
    return format_bytes(format) * double(x_shape().numel() + y_shape().numel() +
                                         int64_t(spec.kh) * spec.kw * cin * cout + cout);
  }
  double flops() const {
    return 2.0 * spec.kh * spec.kw * double(cin * cout) * double(y_shape().numel() / cout);
  }
};

// Conv tolerance against the double-accumulating reference: fp32 products and fp32 accumulation
// over K = kh*kw*cin terms: max(1e-5, 2 sqrt(K) u M), M = the largest sum|x*w| over outputs
// (the reference conv on |x|, |w|); see tests/test_layers.cpp for the full argument.
constexpr double kConvAtol = 1e-5, kConvRtol = 1e-5;
inline double conv_atol(const Tensor& x, const std::vector<float>& w, int64_t cout,
                        Conv2dSpec spec) {
  Tensor ax = x.clone();
  for (int64_t i = 0; i < ax.numel(); ++i) ax.data()[i] = std::fabs(ax.data()[i]);
  std::vector<float> aw(w.size());
  for (size_t i = 0; i < w.size(); ++i) aw[i] = std::fabs(w[i]);
  spec.relu = false;
  Tensor m(conv2d_output_shape(x.shape(), cout, spec));
  conv2d_forward_ref_cpu(ax, aw.data(), nullptr, cout, spec, m);
  double max_m = 0;
  for (int64_t i = 0; i < m.numel(); ++i) max_m = std::max<double>(max_m, m.data()[i]);
  const double K = static_cast<double>(spec.kh) * spec.kw * x.c();
  return std::max(kConvAtol, 2.0 * std::sqrt(K) * kFloatEps * max_m);
}

struct Conv2d {
  using Case = Conv2dCase;
  struct Inputs {
    Tensor x;
    std::vector<float> w_hwio, bias;
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "conv2d";
  static constexpr const char* kCpuEntry = "Conv2dCpu::forward (oneDNN)";
  static constexpr const char* kCudaEntry =
      "Conv2dCudnn::forward (cuDNN graph API, fused bias+ReLU)";
  static std::vector<Case> cases(Device d) {
    struct G {
      const char* name;
      int64_t n, h, w, cin, cout;
      Conv2dSpec spec;
    };
    // Odd shapes for every geometry the Inception net uses, and two of its real layers (batch 8).
    const G geoms[] = {
        {"3x3_s1_same", 2, 9, 11, 8, 16, {3, 3, 1, Padding::Same, true}},
        {"3x1_s2_valid", 2, 9, 11, 8, 16, {3, 1, 2, Padding::Valid, true}},
        {"1x7_s1_same", 2, 9, 11, 8, 16, {1, 7, 1, Padding::Same, true}},
        {"1x1_s1_valid", 2, 9, 11, 8, 16, {1, 1, 1, Padding::Valid, true}},
        {"mixed5_1x7_b8", 8, 17, 17, 128, 192, {1, 7, 1, Padding::Same, true}},
        {"mixed0_3x3_b8", 8, 35, 35, 64, 96, {3, 3, 1, Padding::Same, true}},
    };
    const GpuFormat formats[] = {GpuFormat::Fp32Nhwc, GpuFormat::Fp32Nchw, GpuFormat::Tf32Nhwc,
                                 GpuFormat::Tf32Nchw, GpuFormat::Fp16Nhwc};
    std::vector<Case> out;
    for (const G& g : geoms)
      for (GpuFormat f : formats) {
        if (d == Device::CPU && f != GpuFormat::Fp32Nhwc) continue;
        const std::string nm =
            d == Device::CPU ? g.name : std::string(g.name) + "_" + gpu_format_name(f);
        out.push_back({nm, g.n, g.h, g.w, g.cin, g.cout, g.spec, f});
      }
    return out;
  }
  static Inputs inputs(const Case& c) {
    Inputs in{grid_tensor(c.x_shape(), 1),
              uniform(int64_t(c.spec.kh) * c.spec.kw * c.cin * c.cout, 2), uniform(c.cout, 3)};
    const float s = 1.f / std::sqrt(static_cast<float>(c.spec.kh * c.spec.kw * c.cin));
    for (float& v : in.w_hwio) v *= s;  // outputs O(1) whatever K
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Conv2dCpu conv("conv " + c.name, in.w_hwio, in.bias, c.cin, c.cout, c.spec);
    Tensor y(conv.output_shape(in.x.shape()));
    conv.forward(in.x, y);
    return {{"y", to_vector(y)}};
  }
  static Tol tol(const Case& c, Device d, const Inputs& in, const Output& want) {
    if (d == Device::CPU)
      return {conv_atol(in.x, in.w_hwio, c.cout, c.spec), kConvRtol,
              "fp32 accumulation over kh*kw*cin terms vs double: 2 sqrt(K) u max sum|x w|"};
    const double t = is_fp16(c.format) ? 3e-2 : is_tf32(c.format) ? 2e-2 : 1e-5;
    return {t * max_abs_of(want.v), t,
            is_fp16(c.format) ? "fp16 outputs (11-bit mantissa) and fp16 inputs/filters"
            : is_tf32(c.format)
                ? "TF32 products (10-bit mantissa) with fp32 accumulation"
                : "fp32 engines only (no TF32/Winograd/FFT): other summation order"};
  }
};

// ---- pool2d: max / average pool, channel concat, global average pool --------------------------
enum class PoolOp { Max, Avg, Concat, GlobalAvg };
struct Pool2dCase {
  std::string name;
  PoolOp op;
  int64_t n, h, w, c;  // input (for Concat: the output; parts split its channels)
  int k, stride;
  Padding pad;
  GpuFormat format;
  int64_t parts[3];  // Concat only: channels of the three inputs (sum = c)
  Shape x_shape() const { return Shape{n, h, w, c}; }
  Shape y_shape() const {
    if (op == PoolOp::GlobalAvg) return Shape{n, c};
    if (op == PoolOp::Concat) return x_shape();
    return pool2d_output_shape(x_shape(), k, stride, pad);
  }
  double bytes() const {
    const double e = format_bytes(format);
    if (op == PoolOp::GlobalAvg) return e * double(x_shape().numel()) + 4.0 * double(n * c);
    return e * double(x_shape().numel() + y_shape().numel());
  }
  double flops() const { return 0; }
};

struct Pool2d {
  using Case = Pool2dCase;
  struct Inputs {
    std::vector<Tensor> x;  // one tensor, or the three parts of a concat
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "pool2d";
  static constexpr const char* kCpuEntry =
      "max_pool2d_forward_cpu / avg_pool2d_forward_cpu / concat_channels_cpu / global_avg_pool_cpu";
  static constexpr const char* kCudaEntry =
      "max_pool2d_cuda / avg_pool2d_cuda / copy_strided_cuda (channel slices) / "
      "global_avg_pool_cuda";
  static std::vector<Case> cases(Device d) {
    const Case base[] = {
        {"max_3x3_s2_valid", PoolOp::Max, 3, 11, 9, 5, 3, 2, Padding::Valid, {}, {}},
        {"avg_3x3_s1_same", PoolOp::Avg, 3, 11, 9, 5, 3, 1, Padding::Same, {}, {}},
        {"max_3x3_s1_same", PoolOp::Max, 3, 11, 9, 5, 3, 1, Padding::Same, {}, {}},
        {"avg_3x3_s2_valid", PoolOp::Avg, 3, 11, 9, 5, 3, 2, Padding::Valid, {}, {}},
        {"concat_3_5_2", PoolOp::Concat, 3, 7, 5, 10, 0, 0, Padding::Valid, {}, {3, 5, 2}},
        {"global_avg", PoolOp::GlobalAvg, 3, 11, 9, 5, 0, 0, Padding::Valid, {}, {}},
        // Inception sizes, batch 8: mixed2 -> mixed3 max pool, a mixed-block avg pool, mixed0's
        // concat (64 + 64 + 96 + 32 is 4 parts; 3 parts of the same 256 channels here), the final
        // pool.
        {"max_3x3_s2_valid_35x35x288_b8",
         PoolOp::Max,
         8,
         35,
         35,
         288,
         3,
         2,
         Padding::Valid,
         {},
         {}},
        {"avg_3x3_s1_same_17x17x768_b8", PoolOp::Avg, 8, 17, 17, 768, 3, 1, Padding::Same, {}, {}},
        {"concat_35x35x256_b8",
         PoolOp::Concat,
         8,
         35,
         35,
         256,
         0,
         0,
         Padding::Valid,
         {},
         {64, 96, 96}},
        {"global_avg_8x8x2048_b8", PoolOp::GlobalAvg, 8, 8, 8, 2048, 0, 0, Padding::Valid, {}, {}},
    };
    const GpuFormat formats[] = {GpuFormat::Fp32Nhwc, GpuFormat::Fp32Nchw, GpuFormat::Fp16Nhwc,
                                 GpuFormat::Fp16Nchw};
    std::vector<Case> out;
    for (const Case& b : base)
      for (GpuFormat f : formats) {
        if (d == Device::CPU && f != GpuFormat::Fp32Nhwc) continue;
        Case c = b;
        c.format = f;
        if (d == Device::CUDA) c.name += std::string("_") + gpu_format_name(f);
        out.push_back(c);
      }
    return out;
  }
  static Inputs inputs(const Case& c) {
    Inputs in;
    if (c.op == PoolOp::Concat)
      for (int i = 0; i < 3; ++i)
        in.x.push_back(grid_tensor(Shape{c.n, c.h, c.w, c.parts[i]}, 21 + uint64_t(i)));
    else
      in.x.push_back(grid_tensor(c.x_shape(), 11));
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Tensor y(c.y_shape());
    switch (c.op) {
      case PoolOp::Max: max_pool2d_forward_cpu(in.x[0], c.k, c.stride, c.pad, y); break;
      case PoolOp::Avg: avg_pool2d_forward_cpu(in.x[0], c.k, c.stride, c.pad, y); break;
      case PoolOp::Concat: concat_channels_cpu({&in.x[0], &in.x[1], &in.x[2]}, y); break;
      case PoolOp::GlobalAvg: global_avg_pool_cpu(in.x[0], y); break;
    }
    return {{"y", to_vector(y)}};
  }
  static Tol tol(const Case& c, Device d, const Inputs&, const Output&) {
    if (c.op == PoolOp::Max || c.op == PoolOp::Concat) {
      if (d == Device::CPU || !is_fp16(c.format)) return {0, 0, "a selection or a copy: exact"};
      return {2e-3, 2e-3, "fp16 storage; the inputs are multiples of 1/1024, exact in fp16"};
    }
    if (c.op == PoolOp::GlobalAvg)
      return d == Device::CPU ? Tol{1e-6, 1e-6, "double sum, one rounding"}
                              : Tol{1e-6, 1e-5, "fp32 accumulation of h*w exact inputs, fp32 out"};
    if (d == Device::CPU) return {1e-6, 1e-6, "<= 9 fp32 additions and one multiply by 1/count"};
    return is_fp16(c.format) ? Tol{2e-3, 2e-3, "fp16 output rounding (2^-11 relative)"}
                             : Tol{1e-6, 1e-6, "<= 9 fp32 additions in another order"};
  }
};

// ---- resize: RGB8 -> out_h x out_w x 3 floats in [-1, 1] (CPU only) ---------------------------
struct ResizeCase {
  const char* name;
  int64_t in_h, in_w, out_h, out_w;
  ResizeFilter filter;
  double bytes() const { return double(in_h * in_w * 3) + 4.0 * double(out_h * out_w * 3); }
  double flops() const { return 0; }
};
struct Resize {
  using Case = ResizeCase;
  struct Inputs {
    Image8 img;
  };
  static constexpr bool kHasCuda = false;
  static constexpr const char* kName = "resize";
  static constexpr const char* kCpuEntry = "resize_to_unit_range_cpu";
  static constexpr const char* kCudaEntry = "(none: CPU only)";
  static std::vector<Case> cases(Device d) {
    if (d != Device::CPU) return {};
    return {{"bilinear_450x600_to_299", 450, 600, 299, 299, ResizeFilter::Bilinear},
            {"antialias_450x600_to_299", 450, 600, 299, 299, ResizeFilter::Antialias},
            {"tf1_450x600_to_299", 450, 600, 299, 299, ResizeFilter::Tf1},
            {"bilinear_80x100_to_299", 80, 100, 299, 299, ResizeFilter::Bilinear},
            {"antialias_80x100_to_299", 80, 100, 299, 299, ResizeFilter::Antialias},
            {"tf1_80x100_to_299", 80, 100, 299, 299, ResizeFilter::Tf1},
            {"antialias_1024x1024_to_299", 1024, 1024, 299, 299, ResizeFilter::Antialias}};
  }
  static Inputs inputs(const Case& c) {
    Inputs in;
    in.img.height = c.in_h;
    in.img.width = c.in_w;
    const std::vector<float> u = uniform(c.in_h * c.in_w * 3, 60, 0.f, 256.f);
    in.img.rgb.resize(u.size());
    for (size_t i = 0; i < u.size(); ++i)
      in.img.rgb[i] = static_cast<uint8_t>(std::min(u[i], 255.f));
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Outputs o{{"y", std::vector<float>(size_t(c.out_h * c.out_w * 3))}};
    resize_to_unit_range_cpu(in.img, c.out_h, c.out_w, c.filter, o[0].v.data());
    return o;
  }
  static Tol tol(const Case& c, Device, const Inputs&, const Output&) {
    if (c.filter == ResizeFilter::Tf1)  // 2 axes x (2 in u px of coordinate error) x a step <= 2
      return {
          std::max(1e-5, 8.0 * double(std::max(c.in_h, c.in_w)) * kFloatEps), 0,
          "TF1 computes src = dst * (in/out) in float: <= 2 in u pixels of coordinate error "
          "per axis (scale and product roundings), times a pixel step of <= 2 in [-1, 1] units"};
    return {1e-5, 0, "weights rounded to fp32, fp32 sums of <= (2 scale + 1)^2 taps of |x| <= 1"};
  }
};

}  // namespace engine::kernel_cases
