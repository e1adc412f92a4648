// tests/kernel_cases.h: the kernel case tables (ggml test-backend-ops style), one per family of the
// classifier head's kernels: dropout, softmax_xent, rmsprop, dense, dense_grad. The layer kernels
// (conv2d, pool2d, resize) are in tests/kernel_cases_layers.h. A family is a struct with
//   Case                     one row: name, shapes, tolerances with their reasons, bytes(), flops()
//   kHasCuda                 whether a CUDA twin exists (resize: CPU only)
//   cases(Device)            the table (the CUDA rows are the CPU rows plus device-only variants)
//   inputs(Case)             deterministic host inputs (Philox, so the same on every machine)
//   cpu(Case, Inputs)        the CPU entry point(s), outputs as named float vectors
//   tol(Case, Device, Inputs, want)  how close the device under test must be to its oracle
// and kCpuEntry / kCudaEntry naming the kernels. Who is the oracle: for Device::CPU an independent
// reference (double loops or closed forms, in the test files); for Device::CUDA the CPU kernel.
// The CUDA runners are in tests/kernel_cases_cuda.h. Used by tests/test_kernels_head.cpp (the
// per-device test body of tests/kernel_test.h) and bench/bench_kernels_cuda.cpp (GB/s per row).
// Tolerances: |got - want| <= atol + rtol * |want|, element-wise.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "kernels/dense.h"
#include "kernels/dense_grad.h"
#include "kernels/dropout.h"
#include "kernels/rmsprop.h"
#include "kernels/softmax_xent.h"

namespace engine::kernel_cases {

struct Tol {
  double atol = 0, rtol = 0;
  const char* why = "";
};
struct Output {
  std::string name;
  std::vector<float> v;
};
using Outputs = std::vector<Output>;

constexpr double kFloatEps = 5.9604644775390625e-08;  // u = 2^-24, float32 unit roundoff

// Deterministic test data from Philox (stream 0xABC), uniform in [lo, hi).
inline std::vector<float> uniform(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = dropout_words(seed, 7, 0xABCu, static_cast<uint64_t>(i) >> 2).v[i & 3];
    v[static_cast<size_t>(i)] = lo + (hi - lo) * static_cast<float>((u >> 8) * (1.0 / 16777216.0));
  }
  return v;
}
inline std::vector<int32_t> labels(int64_t n, int64_t k, uint64_t seed) {
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    y[static_cast<size_t>(i)] =
        static_cast<int32_t>(dropout_words(seed, 9, 0xDEFu, static_cast<uint64_t>(i)).v[0] % k);
  return y;
}

// fp32 dot products of K terms err by ~sqrt(K) * u * sum|terms| when the roundings are
// independent (the worst case is K * u * sum): 2 sqrt(K) u M, M = the largest sum of |terms|.
inline double gemm_atol(int64_t k, double max_abs_sum) {
  return 2.0 * std::sqrt(static_cast<double>(k)) * kFloatEps * max_abs_sum;
}

// ---- dropout: forward and backward with one key (the backward regenerates the mask) ------------
struct DropoutCase {
  const char* name;
  int64_t n;
  float p;
  DropoutKey key;
  double bytes() const { return 16.0 * double(n); }  // fwd + bwd, each reads 4 B and writes 4 B
  double flops() const { return 0; }
};
struct Dropout {
  using Case = DropoutCase;
  struct Inputs {
    std::vector<float> x, dy;
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "dropout";
  static constexpr const char* kCpuEntry = "dropout_forward_cpu + dropout_backward_cpu";
  static constexpr const char* kCudaEntry = "dropout_forward_cuda + dropout_backward_cuda";
  static std::vector<Case> cases(Device) {
    return {{"n10007_p03", 10007, 0.3f, {123, 5, 2}},  // not a multiple of 4: the tail group
            {"n1M3_p05", (1 << 20) + 3, 0.5f, {99, 17, 2}},
            {"head128x512_p05", 128 * 512, 0.5f, {1234, 3, 1}},
            {"n4M_p02", 1 << 22, 0.2f, {7, 1000000007, 1}}};
  }
  static Inputs inputs(const Case& c) { return {uniform(c.n, 21, 0.5f, 2.f), uniform(c.n, 22)}; }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Outputs o{{"y", std::vector<float>(in.x.size())}, {"dx", std::vector<float>(in.dy.size())}};
    dropout_forward_cpu(in.x.data(), o[0].v.data(), c.n, c.p, c.key);
    dropout_backward_cpu(in.dy.data(), o[1].v.data(), c.n, c.p, c.key);
    return o;
  }
  static Tol tol(const Case&, Device d, const Inputs&, const Output&) {
    return d == Device::CPU
               ? Tol{0, 0,
                     "bitwise: keep(i) from philox4x32_10 (Random123 KAT-checked), one fp32 "
                     "multiply"}
               : Tol{0, 0, "bitwise: the same Philox words and the same fp32 multiply on the GPU"};
  }
};

// ---- softmax_xent: weighted loss + dlogits, and the plain softmax ----------------------------
struct SoftmaxXentCase {
  const char* name;
  int64_t n, k;
  bool weighted, huge_logit;  // huge_logit: z[0] = 1e4 (lse must not overflow)
  double bytes() const { return 16.0 * double(n * k) + 4.0 * double(n); }  // xent r/w + softmax r/w
  double flops() const { return 0; }
};
struct SoftmaxXent {
  using Case = SoftmaxXentCase;
  struct Inputs {
    std::vector<float> z, w;
    std::vector<int32_t> y;
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "softmax_xent";
  static constexpr const char* kCpuEntry = "softmax_xent_cpu + softmax_cpu";
  static constexpr const char* kCudaEntry = "softmax_xent_cuda + softmax_cuda";
  static std::vector<Case> cases(Device) {
    return {{"n130_k2_w", 130, 2, true, true},
            {"n130_k5_w", 130, 5, true, true},
            {"n130_k1000_w", 130, 1000, true, true},
            {"n128_k2", 128, 2, false, false},
            {"n4096_k1000_w", 4096, 1000, true, false}};
  }
  static Inputs inputs(const Case& c) {
    Inputs in{
        uniform(c.n * c.k, 30 + static_cast<uint64_t>(c.k), -8.f, 8.f), {}, labels(c.n, c.k, 31)};
    if (c.huge_logit) in.z[0] = 1e4f;
    if (c.weighted) in.w = uniform(c.k, 32, 0.5f, 2.f);
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Outputs o{{"loss", {0.f}},
              {"dlogits", std::vector<float>(in.z.size())},
              {"probs", std::vector<float>(in.z.size())}};
    o[0].v[0] = softmax_xent_cpu(in.z.data(), in.y.data(), in.w.empty() ? nullptr : in.w.data(),
                                 c.n, c.k, o[1].v.data());
    softmax_cpu(in.z.data(), o[2].v.data(), c.n, c.k);
    return o;
  }
  static Tol tol(const Case&, Device d, const Inputs&, const Output& want) {
    if (want.name == "loss")
      return d == Device::CPU
                 ? Tol{1e-7, 1e-6, "per-row lse in fp32 (1/2 ulp of |lse|), batch sums in double"}
                 : Tol{1e-7, 1e-6, "fp32 exp/log on both sides in another order; fixed-order sums"};
    return d == Device::CPU
               ? Tol{1e-8, 1e-5,
                     "fp32 exp(z - max): the argument's rounding (ulp 16 ~ 1e-6) is "
                     "~1e-6 relative; p - 1 cancels to 1 ulp of 1 times w/sum w"}
               : Tol{1e-8, 1e-5,
                     "fp32 exp on both sides (CUDA expf within 2 ulp), other sum order"};
  }
};

// ---- rmsprop: `steps` fused updates over one arena, both formulas ----------------------------
struct RmsPropCase {
  const char* name;
  int64_t n;
  RmsPropFormula formula;
  int steps;
  RmsPropConfig config() const {
    RmsPropConfig c;
    c.formula = formula;
    c.eps = RmsPropConfig::default_eps(formula);
    c.momentum = 0.9;
    c.lr = 0.01;
    c.decay_rate = 0.7;
    c.decay_steps = 2;
    return c;
  }
  double bytes() const { return 28.0 * double(n); }  // per update: read p g ms mom, write p ms mom
  double flops() const { return 8.0 * double(n); }
};
struct RmsProp {
  using Case = RmsPropCase;
  struct Inputs {
    std::vector<float> p, ms, mom;
    std::vector<std::vector<float>> g;  // one gradient per step
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "rmsprop";
  static constexpr const char* kCpuEntry = "rmsprop_update_cpu";
  static constexpr const char* kCudaEntry = "rmsprop_update_cuda";
  static std::vector<Case> cases(Device) {
    return {{"tf1_n1M5_3steps", (1 << 20) + 5, RmsPropFormula::TF1, 3},
            {"torch_n1M5_3steps", (1 << 20) + 5, RmsPropFormula::Torch, 3},
            {"tf1_head_params_1step", 1313284, RmsPropFormula::TF1, 1},  // 2048-512-512-2
            {"tf1_n4M_1step", 1 << 22, RmsPropFormula::TF1, 1}};
  }
  static Inputs inputs(const Case& c) {
    const RmsPropConfig cfg = c.config();
    Inputs in{uniform(c.n, 40),
              std::vector<float>(static_cast<size_t>(c.n), cfg.ms_init()),
              std::vector<float>(static_cast<size_t>(c.n), 0.f),
              {}};
    for (int s = 0; s < c.steps; ++s) in.g.push_back(uniform(c.n, 41 + static_cast<uint64_t>(s)));
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Outputs o{{"params", in.p}, {"ms", in.ms}, {"mom", in.mom}, {"step", {0.f}}};
    int64_t step = 0;
    for (int s = 0; s < c.steps; ++s)
      rmsprop_update_cpu(o[0].v.data(), in.g[static_cast<size_t>(s)].data(), o[1].v.data(),
                         o[2].v.data(), c.n, c.config(), &step);
    o[3].v[0] = static_cast<float>(step);
    return o;
  }
  static Tol tol(const Case& c, Device d, const Inputs&, const Output& want) {
    const RmsPropConfig cfg = c.config();
    // Torch's buf adds g/(sqrt(v)+eps) terms of size up to 1/sqrt(1-rho) (= 10) that can cancel to
    // a small buf: its error is a few ulps of 10 per step, absolute, not relative to the result.
    if (d == Device::CPU && cfg.formula == RmsPropFormula::Torch && want.name == "mom")
      return {4 * kFloatEps * c.steps * (1 + cfg.momentum) / std::sqrt(1 - cfg.rho), 1e-6,
              "torch buf: a few fp32 ulps of |g/sqrt(v)| <= 1/sqrt(1-rho) per step, absolute"};
    return d == Device::CPU
               ? Tol{1e-7, 1e-6,
                     "the formulas in double: fp32 fmaf/sqrt/div roundings over a few "
                     "steps, lr rounded to float once"}
               : Tol{0, 0, "bitwise: the same fmaf/__fsqrt_rn/__fdiv_rn sequence and the same lr"};
  }
};

// ---- dense: y = x @ W + b (forward only) --------------------------------------------------------
struct DenseCase {
  const char* name;
  int64_t n, in, out;
  double bytes() const { return 4.0 * double(n * in + in * out + out + n * out); }
  double flops() const { return 2.0 * double(n * in * out); }
};
struct Dense {
  using Case = DenseCase;
  struct Inputs {
    std::vector<float> x, w, b;
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "dense";
  static constexpr const char* kCpuEntry = "dense_forward_cpu (dnnl_sgemm)";
  static constexpr const char* kCudaEntry = "sgemm_rowmajor_cuda + bias_act_forward_cuda(relu off)";
  static std::vector<Case> cases(Device) {
    return {
        {"n5_2048x9", 5, 2048, 9}, {"n37_70x45", 37, 70, 45}, {"n128_2048x512", 128, 2048, 512}};
  }
  // x in [-1, 1], W in [-1, 1] / sqrt(in) (Glorot-like: outputs O(1)), b in [-1, 1].
  static Inputs inputs(const Case& c) {
    Inputs in{uniform(c.n * c.in, 50), uniform(c.in * c.out, 51), uniform(c.out, 52)};
    const float s = 1.f / std::sqrt(static_cast<float>(c.in));
    for (float& v : in.w) v *= s;
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    Tensor x = Tensor::view(const_cast<float*>(in.x.data()), Shape{c.n, c.in});
    Outputs o{{"y", std::vector<float>(static_cast<size_t>(c.n * c.out))}};
    Tensor y = Tensor::view(o[0].v.data(), Shape{c.n, c.out});
    dense_forward_cpu(x, in.w.data(), in.b.data(), c.out, y);
    return o;
  }
  // sum_i |x_i w_io| <= in * 1 * (1/sqrt(in)) = sqrt(in); the bias adds one more rounding.
  static Tol tol(const Case& c, Device d, const Inputs&, const Output&) {
    const double a = std::max(1e-5, gemm_atol(c.in, std::sqrt(double(c.in)) + 1));
    return d == Device::CPU
               ? Tol{a, 1e-5, "fp32 sgemm accumulation vs double: 2 sqrt(K) u sum|x w|"}
               : Tol{2 * a, 1e-4, "two fp32 accumulation orders (cuBLAS FP32 math, no TF32)"};
  }
};

// ---- dense_grad: relu(x W + b), its backward (dz, dW, db, dx) ----------------------------------
struct DenseGradCase {
  const char* name;
  int64_t n, in, out;
  // Floats moved by the six kernels: 3 GEMMs (operands read, result written), bias+ReLU (r/w y, b),
  // ReLU backward (dy, a -> dz), bias gradient (dz -> db).
  double bytes() const { return 4.0 * double(3 * n * in + 3 * in * out + 8 * n * out + 2 * out); }
  double flops() const { return 6.0 * double(n * in * out); }
};
struct DenseGrad {
  using Case = DenseGradCase;
  struct Inputs {
    std::vector<float> x, w, b, r;  // r: the upstream gradient dL/da
  };
  static constexpr bool kHasCuda = true;
  static constexpr const char* kName = "dense_grad";
  static constexpr const char* kCpuEntry =
      "sgemm_rowmajor_cpu + bias_act_forward_cpu + relu_backward_cpu + bias_grad_cpu";
  static constexpr const char* kCudaEntry =
      "sgemm_rowmajor_cuda + bias_act_forward_cuda + relu_backward_cuda + bias_grad_cuda";
  static std::vector<Case> cases(Device) {
    return {{"n37_70x45", 37, 70, 45},
            {"n128_512x512", 128, 512, 512},
            {"n128_2048x512", 128, 2048, 512}};
  }
  static Inputs inputs(const Case& c) {
    Inputs in{uniform(c.n * c.in, 50), uniform(c.in * c.out, 51), uniform(c.out, 52),
              uniform(c.n * c.out, 53)};
    if (c.in > 70) {  // keep the pre-activations O(1) on the wide cases (Glorot-like W)
      const float s = 1.f / std::sqrt(static_cast<float>(c.in));
      for (float& v : in.w) v *= s;
    }
    return in;
  }
  static Outputs cpu(const Case& c, const Inputs& in) {
    const int64_t N = c.n, I = c.in, O = c.out;
    Outputs o{{"a", std::vector<float>(size_t(N * O))},
              {"dW", std::vector<float>(size_t(I * O))},
              {"db", std::vector<float>(size_t(O))},
              {"dx", std::vector<float>(size_t(N * I))}};
    std::vector<float> dz(size_t(N * O));
    float *a = o[0].v.data(), *dW = o[1].v.data(), *db = o[2].v.data(), *dx = o[3].v.data();
    sgemm_rowmajor_cpu(false, false, N, O, I, 1.f, in.x.data(), I, in.w.data(), O, 0.f, a, O, "t");
    bias_act_forward_cpu(a, in.b.data(), N, O, true);
    relu_backward_cpu(in.r.data(), a, dz.data(), N * O);
    sgemm_rowmajor_cpu(true, false, I, O, N, 1.f, in.x.data(), I, dz.data(), O, 0.f, dW, O, "t");
    bias_grad_cpu(dz.data(), db, N, O);
    sgemm_rowmajor_cpu(false, true, N, I, O, 1.f, dz.data(), O, in.w.data(), O, 0.f, dx, I, "t");
    return o;
  }
  // Each output is a K-term fp32 sum of terms bounded by the data ranges: a: K = in, |x w| <= wmax;
  // dW: K = n, |x dz| <= 1; db: K = n, in double; dx: K = out, |dz w| <= wmax.
  static Tol tol(const Case& c, Device d, const Inputs&, const Output& want) {
    if (d == Device::CUDA && c.in <= 70)
      return {1e-5, 1e-4, "cuBLAS FP32 math (no TF32): float rounding differences only"};
    const double wmax = c.in > 70 ? 1.0 / std::sqrt(double(c.in)) : 1.0;
    double a = 1e-6;
    if (want.name == "a") a = gemm_atol(c.in, c.in * wmax + 1);
    if (want.name == "dW") a = gemm_atol(c.n, double(c.n));
    if (want.name == "dx") a = gemm_atol(c.out, c.out * wmax);
    a = std::max(a, 1e-6);
    return d == Device::CPU ? Tol{a, 1e-5, "fp32 K-term sums vs double: 2 sqrt(K) u sum|terms|"}
                            : Tol{2 * a, 1e-4, "two fp32 accumulation orders (cuBLAS FP32 math)"};
  }
};

}  // namespace engine::kernel_cases
