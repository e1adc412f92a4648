// tests/test_kernels_head.cpp: the classifier head's kernels (kernels/dropout.h, softmax_xent.h,
// rmsprop.h, dense_grad.h). First the closed-form and known-answer tests of the CPU kernels:
// Philox known-answer vectors (Random123 kat_vectors), dropout statistics and mask regeneration,
// softmax / cross-entropy closed forms, finite-difference gradient checks in double (dense+bias+
// ReLU, weighted softmax-xent), RMSProp (TF1 and torch) against the formulas run in double for 3
// steps, learning-rate decay. Then the case tables of tests/kernel_cases.h through the per-device
// test body of tests/kernel_test.h: Cpu/<Family>Kernel.MatchesOracle/<case> compares the CPU
// kernel with the independent references below (double loops, the Philox keep rule);
// Cuda/<Family>Kernel.MatchesOracle/<case> compares the CUDA twin with the CPU kernel (skipped,
// with the reason printed, without a GPU; a failure with ENGINE_REQUIRE_GPU=1).
// Run: ctest -R 'test_kernels_head|Kernel' or build/tests/test_kernels_head.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/dense_grad.h"
#include "kernels/dropout.h"
#include "kernels/rmsprop.h"
#include "kernels/softmax_xent.h"
#include "test_util.h"
#include "tests/kernel_cases.h"
#include "tests/kernel_test.h"

using namespace engine;
using engine::kernel_cases::labels;
using engine::kernel_cases::uniform;
using engine::test::tensors_close;

namespace {
// Central difference of a double function of one variable, step h.
double central(const std::function<double(double)>& f, double x, double h) {
  return (f(x + h) - f(x - h)) / (2 * h);
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Philox and dropout
// ---------------------------------------------------------------------------------------------
TEST(Philox, Random123KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  // Random123 examples/kat_vectors: "philox4x32 10 CTR(4) KEY(2) EXPECTED(4)".
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    Philox4x32 c{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}};
    const Philox4x32 r = philox4x32_10(c, k.key[0], k.key[1]);
    for (int j = 0; j < 4; ++j)
      EXPECT_EQ(r.v[j], k.out[j]) << "word " << j << " for ctr[0]=" << std::hex << k.ctr[0];
  }
}

TEST(Dropout, KeepFractionWithinFourSigma) {
  const int64_t n = 1 << 20;
  std::vector<uint8_t> m(static_cast<size_t>(n));
  for (float p : {0.5f, 0.2f, 0.9f}) {
    dropout_mask_cpu(m.data(), n, p, DropoutKey{42, 3, 1});
    int64_t kept = 0;
    for (uint8_t b : m) kept += b;
    const double q = 1.0 - p, sigma = std::sqrt(n * q * (1 - q));
    std::printf("  p %.1f: kept %lld of %lld (expected %.0f, %.2f sigma)\n", p, (long long)kept,
                (long long)n, n * q, (kept - n * q) / sigma);
    EXPECT_LE(std::fabs(kept - n * q), 4 * sigma) << "p " << p;
  }
}

TEST(Dropout, SameKeySameMaskOtherStepOrStreamDifferent) {
  const int64_t n = 1 << 16;
  std::vector<uint8_t> a(n), b(n), c(n), d(n);
  dropout_mask_cpu(a.data(), n, 0.5f, DropoutKey{7, 11, 1});
  dropout_mask_cpu(b.data(), n, 0.5f, DropoutKey{7, 11, 1});
  dropout_mask_cpu(c.data(), n, 0.5f, DropoutKey{7, 12, 1});
  dropout_mask_cpu(d.data(), n, 0.5f, DropoutKey{7, 11, 2});
  EXPECT_EQ(a, b);
  int64_t diff_step = 0, diff_stream = 0;
  for (int64_t i = 0; i < n; ++i) diff_step += a[i] != c[i], diff_stream += a[i] != d[i];
  // Independent masks differ on half of the elements (p = 0.5): 32768 +- 4*128.
  EXPECT_NEAR(diff_step, n / 2, 4 * 128);
  EXPECT_NEAR(diff_stream, n / 2, 4 * 128);
}

TEST(Dropout, ForwardScalesKeptAndBackwardRegeneratesTheMask) {
  const int64_t n = 10007;  // not a multiple of 4: the tail group is exercised
  const float p = 0.3f;
  const DropoutKey key{123, 5, 2};
  std::vector<float> x = uniform(n, 1, 0.5f, 2.f), y(n), g = uniform(n, 2, 0.5f, 2.f), dx(n);
  std::vector<uint8_t> m(n);
  dropout_mask_cpu(m.data(), n, p, key);
  dropout_forward_cpu(x.data(), y.data(), n, p, key);
  dropout_backward_cpu(g.data(), dx.data(), n, p, key);
  const float scale = 1.f / (1.f - p);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad += y[i] != (m[i] ? x[i] * scale : 0.f);
    bad += dx[i] != (m[i] ? g[i] * scale : 0.f);
    bad += (y[i] != 0.f) != (dx[i] != 0.f);  // the backward's mask is the forward's
  }
  EXPECT_EQ(bad, 0);
  // In place and p = 0 (identity).
  std::vector<float> z = x;
  dropout_forward_cpu(z.data(), z.data(), n, 0.f, key);
  EXPECT_EQ(z, x);
  EXPECT_THROW(dropout_forward_cpu(x.data(), y.data(), n, 1.f, key), Error);
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy
// ---------------------------------------------------------------------------------------------
TEST(SoftmaxXent, ClosedFormK2) {
  const float z[2] = {0.f, std::log(3.f)};
  float p[2];
  softmax_cpu(z, p, 1, 2);
  EXPECT_NEAR(p[0], 0.25f, 1e-7);
  EXPECT_NEAR(p[1], 0.75f, 1e-7);
  const int32_t y1 = 1;
  float g[2];
  const float loss = softmax_xent_cpu(z, &y1, nullptr, 1, 2, g);
  EXPECT_NEAR(loss, -std::log(0.75), 1e-7);
  EXPECT_NEAR(g[0], 0.25f, 1e-7);
  EXPECT_NEAR(g[1], -0.25f, 1e-7);
}

TEST(SoftmaxXent, HugeLogitsStayFinite) {
  const float z[6] = {1e4f, 0.f, -1e4f, 1e4f, 1e4f - 1.f, 1e4f};
  const int32_t y[2] = {2, 1};
  float p[6], g[6];
  softmax_cpu(z, p, 2, 3);
  const float loss = softmax_xent_cpu(z, y, nullptr, 2, 3, g);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(p[i]) && std::isfinite(g[i])) << i;
  EXPECT_TRUE(std::isfinite(loss));
  // Row 0: -log p[2] = 2e4 (exactly, to float); row 1: lse = 1e4 + log(2 + e^-1).
  const double want = (2e4 + (std::log(2 + std::exp(-1.0)) + 1.0)) / 2;
  EXPECT_NEAR(loss, want, 1e-3);
  EXPECT_NEAR(p[4], std::exp(-1.0) / (2 + std::exp(-1.0)), 1e-6);
}

TEST(SoftmaxXent, ClassWeightsClosedForm) {
  // Rows: z = [0, log 3] (p = .25/.75), labels 0 and 1; weights {2, 0.5}.
  const float z[4] = {0.f, std::log(3.f), 0.f, std::log(3.f)};
  const int32_t y[2] = {0, 1};
  const float w[2] = {2.f, 0.5f};
  float g[4];
  const float loss = softmax_xent_cpu(z, y, w, 2, 2, g);
  const double want = (2 * -std::log(0.25) + 0.5 * -std::log(0.75)) / 2.5;
  EXPECT_NEAR(loss, want, 2e-7 * want);
  const float gw[4] = {2 * (0.25f - 1) / 2.5f, 2 * 0.75f / 2.5f, 0.5f * 0.25f / 2.5f,
                       0.5f * (0.75f - 1) / 2.5f};
  EXPECT_CLOSE((g, gw, 4, 1e-7, 1e-6, "weighted dlogits"));
  const int32_t bad = 2;
  EXPECT_THROW(softmax_xent_cpu(z, &bad, w, 1, 2, g), Error);
}

// ---------------------------------------------------------------------------------------------
// Finite-difference gradient checks (double forward, central differences, h = 1e-6 on a
// double copy of the inputs; analytic gradients from the float kernels). Tolerance atol 1e-5 +
// rtol 1e-3: float32 kernels on O(1) values are accurate to ~1e-6, FD in double to ~1e-9.
// ---------------------------------------------------------------------------------------------
TEST(GradCheck, DenseBiasReluBackward) {
  const int64_t N = 5, I = 7, O = 6;
  std::vector<float> x = uniform(N * I, 3), W = uniform(I * O, 4), b = uniform(O, 5, -0.3f, 0.3f),
                     r = uniform(N * O, 6);
  // Analytic: a = relu(xW+b); L = sum r*a; dz = r*(a>0); dW = x^T dz; db = colsum; dx = dz W^T.
  std::vector<float> a(N * O), dz(N * O), dW(I * O), db(O), dx(N * I);
  sgemm_rowmajor_cpu(false, false, N, O, I, 1.f, x.data(), I, W.data(), O, 0.f, a.data(), O, "t");
  bias_act_forward_cpu(a.data(), b.data(), N, O, true);
  relu_backward_cpu(r.data(), a.data(), dz.data(), N * O);
  sgemm_rowmajor_cpu(true, false, I, O, N, 1.f, x.data(), I, dz.data(), O, 0.f, dW.data(), O, "t");
  bias_grad_cpu(dz.data(), db.data(), N, O);
  sgemm_rowmajor_cpu(false, true, N, I, O, 1.f, dz.data(), O, W.data(), O, 0.f, dx.data(), I, "t");

  std::vector<double> xd(x.begin(), x.end()), Wd(W.begin(), W.end()), bd(b.begin(), b.end());
  double min_pre = 1e30;
  auto loss = [&](bool track) {
    double L = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        double z = bd[o];
        for (int64_t i = 0; i < I; ++i) z += xd[n * I + i] * Wd[i * O + o];
        if (track) min_pre = std::min(min_pre, std::fabs(z));
        L += r[n * O + o] * (z > 0 ? z : 0);
      }
    return L;
  };
  loss(true);
  ASSERT_GT(min_pre, 1e-3) << "test data puts a pre-activation within 1e-3 of the ReLU kink";
  const double h = 1e-6;
  auto fd = [&](std::vector<double>& v, size_t i) {
    const double v0 = v[i];
    const double g = central(
        [&](double t) {
          v[i] = t;
          return loss(false);
        },
        v0, h);
    v[i] = v0;
    return static_cast<float>(g);
  };
  std::vector<float> nW(W.size()), nb(b.size()), nx(x.size());
  for (size_t i = 0; i < W.size(); ++i) nW[i] = fd(Wd, i);
  for (size_t i = 0; i < b.size(); ++i) nb[i] = fd(bd, i);
  for (size_t i = 0; i < x.size(); ++i) nx[i] = fd(xd, i);
  EXPECT_CLOSE((dW.data(), nW.data(), nW.size(), 1e-5, 1e-3, "dW"));
  EXPECT_CLOSE((db.data(), nb.data(), nb.size(), 1e-5, 1e-3, "db"));
  EXPECT_CLOSE((dx.data(), nx.data(), nx.size(), 1e-5, 1e-3, "dx"));
}

TEST(GradCheck, WeightedSoftmaxXentBackward) {
  const int64_t N = 6, K = 4;
  std::vector<float> z = uniform(N * K, 8, -3.f, 3.f), g(N * K);
  const std::vector<int32_t> y = {0, 3, 1, 1, 2, 3};
  const std::vector<float> w = {0.5f, 2.f, 1.f, 3.f};
  softmax_xent_cpu(z.data(), y.data(), w.data(), N, K, g.data());
  std::vector<double> zd(z.begin(), z.end());
  auto loss = [&]() {
    double num = 0, den = 0;
    for (int64_t i = 0; i < N; ++i) {
      double m = -1e300, s = 0;
      for (int64_t j = 0; j < K; ++j) m = std::max(m, zd[i * K + j]);
      for (int64_t j = 0; j < K; ++j) s += std::exp(zd[i * K + j] - m);
      num += w[y[i]] * (m + std::log(s) - zd[i * K + y[i]]);
      den += w[y[i]];
    }
    return num / den;
  };
  std::vector<float> nd(N * K);
  for (int64_t i = 0; i < N * K; ++i) {
    const double v0 = zd[i];
    nd[i] = static_cast<float>(central(
        [&](double t) {
          zd[i] = t;
          return loss();
        },
        v0, 1e-6));
    zd[i] = v0;
  }
  EXPECT_CLOSE((g.data(), nd.data(), N * K, 1e-6, 1e-4, "weighted dlogits vs FD"));
}

// ---------------------------------------------------------------------------------------------
// RMSProp and learning-rate decay
// ---------------------------------------------------------------------------------------------
namespace {
// One step (0-based `s`) of tf.train.RMSPropOptimizer (TF1) or torch.optim.RMSprop in double, lr
// from the exponential decay: the independent reference of the RMSProp tests and cases below.
void rmsprop_step_double(const RmsPropConfig& c, int s, const float* g, std::vector<double>& p,
                         std::vector<double>& ms, std::vector<double>& mom) {
  const double e = c.decay_steps > 0 ? (c.staircase ? std::floor(double(s) / c.decay_steps)
                                                    : double(s) / c.decay_steps)
                                     : 0.0;
  const double lr = c.lr * std::pow(c.decay_rate, e);
  for (size_t i = 0; i < p.size(); ++i) {
    const double gi = g[i];
    if (c.formula == RmsPropFormula::TF1) {
      ms[i] += (gi * gi - ms[i]) * (1 - c.rho);
      mom[i] = c.momentum * mom[i] + lr * gi / std::sqrt(ms[i] + c.eps);
      p[i] -= mom[i];
    } else {
      ms[i] = c.rho * ms[i] + (1 - c.rho) * gi * gi;
      mom[i] = c.momentum * mom[i] + gi / (std::sqrt(ms[i]) + c.eps);
      p[i] -= lr * mom[i];
    }
  }
}

void rmsprop_three_steps(RmsPropConfig c) {
  std::vector<float> p = {1.f, -2.f, 0.5f}, ms(3, c.ms_init()), mom(3, 0.f);
  const float g[3][3] = {{0.1f, -0.3f, 2.f}, {0.2f, 0.1f, -1.f}, {-0.05f, 0.4f, 0.5f}};
  std::vector<double> pd(p.begin(), p.end()), msd(3, c.ms_init()), momd(3, 0.0);
  int64_t step = 0;
  for (int s = 0; s < 3; ++s) {
    rmsprop_step_double(c, s, g[s], pd, msd, momd);
    rmsprop_update_cpu(p.data(), g[s], ms.data(), mom.data(), 3, c, &step);
  }
  EXPECT_EQ(step, 3);
  std::vector<float> want(pd.begin(), pd.end()), wms(msd.begin(), msd.end());
  EXPECT_CLOSE((p.data(), want.data(), 3, 1e-7, 1e-6, "params after 3 steps"));
  EXPECT_CLOSE((ms.data(), wms.data(), 3, 1e-7, 1e-6, "ms after 3 steps"));
}
}  // namespace

TEST(RmsProp, Tf1ThreeStepsMatchFormula) {
  RmsPropConfig c;
  c.lr = 0.01;
  rmsprop_three_steps(c);
  c.momentum = 0.9;
  c.decay_rate = 0.5;
  c.decay_steps = 2;
  rmsprop_three_steps(c);
  c.staircase = true;
  rmsprop_three_steps(c);
}

TEST(RmsProp, TorchThreeStepsMatchFormula) {
  RmsPropConfig c;
  c.formula = RmsPropFormula::Torch;
  c.eps = 1e-8;
  c.rho = 0.99;
  c.lr = 0.01;
  rmsprop_three_steps(c);
  c.momentum = 0.9;
  c.decay_rate = 0.3;
  c.decay_steps = 1;
  rmsprop_three_steps(c);
}

TEST(RmsProp, HandComputedValues) {
  // TF1, g = 1 always, ms starts at 1: ms stays 1, mom = lr/sqrt(1+1e-10) = lr: p = 1 - 3 lr.
  RmsPropConfig c;
  c.lr = 0.01;
  float p = 1.f, ms = 1.f, mom = 0.f;
  const float g = 1.f;
  int64_t step = 0;
  for (int s = 0; s < 3; ++s) rmsprop_update_cpu(&p, &g, &ms, &mom, 1, c, &step);
  EXPECT_FLOAT_EQ(ms, 1.f);
  EXPECT_NEAR(p, 0.97f, 2e-7);
  // Torch, alpha 0.9, g = 1, v from 0: v1 = 0.1, v2 = 0.19, v3 = 0.271;
  // p = 1 - 0.01*(1/sqrt(.1) + 1/sqrt(.19) + 1/sqrt(.271)) = 1 - 0.01*(3.16228+2.29416+1.92095).
  c.formula = RmsPropFormula::Torch;
  c.eps = 1e-8;
  p = 1.f, ms = 0.f, mom = 0.f, step = 0;
  for (int s = 0; s < 3; ++s) rmsprop_update_cpu(&p, &g, &ms, &mom, 1, c, &step);
  EXPECT_NEAR(ms, 0.271f, 1e-6);
  EXPECT_NEAR(p, 1.f - 0.01f * (3.162278f + 2.294157f + 1.920949f), 2e-6);
}

TEST(RmsProp, LearningRateDecayClosedForm) {
  RmsPropConfig c;
  c.lr = 0.1;
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 1000), 0.1f);  // no decay configured
  c.decay_rate = 0.5;
  c.decay_steps = 10;
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 0), 0.1f);
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 5), static_cast<float>(0.1 * std::sqrt(0.5)));
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 10), 0.05f);
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 25), static_cast<float>(0.1 * std::pow(0.5, 2.5)));
  c.staircase = true;
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 9), 0.1f);
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 10), 0.05f);
  EXPECT_FLOAT_EQ(rmsprop_learning_rate(c, 29), 0.025f);
}

// ---------------------------------------------------------------------------------------------
// The case tables, per device. The independent references (Device::CPU's oracle).
// ---------------------------------------------------------------------------------------------
namespace engine::kernel_cases {

// Element by element from the keep rule (dropout_keep: Philox words, threshold round(p 2^32)).
Outputs reference(const DropoutCase& c, const Dropout::Inputs& in) {
  const uint32_t thr = dropout_threshold(c.p);
  const float scale = 1.f / (1.f - c.p);
  Outputs o{{"y", std::vector<float>(in.x.size())}, {"dx", std::vector<float>(in.dy.size())}};
  for (int64_t i = 0; i < c.n; ++i) {
    const bool keep = dropout_keep(c.key.seed, c.key.step, c.key.stream, uint64_t(i), thr);
    o[0].v[size_t(i)] = keep ? in.x[size_t(i)] * scale : 0.f;
    o[1].v[size_t(i)] = keep ? in.dy[size_t(i)] * scale : 0.f;
  }
  return o;
}

// The definitions in double: lse = max + log sum exp(z - max), p = exp(z - lse).
Outputs reference(const SoftmaxXentCase& c, const SoftmaxXent::Inputs& in) {
  const size_t nk = size_t(c.n * c.k);
  Outputs o{
      {"loss", {0.f}}, {"dlogits", std::vector<float>(nk)}, {"probs", std::vector<float>(nk)}};
  std::vector<double> p(nk);
  double num = 0, den = 0;
  for (int64_t i = 0; i < c.n; ++i) {
    const float* z = in.z.data() + i * c.k;
    double m = z[0], s = 0;
    for (int64_t j = 1; j < c.k; ++j) m = std::max(m, double(z[j]));
    for (int64_t j = 0; j < c.k; ++j) s += std::exp(double(z[j]) - m);
    const double lse = m + std::log(s);
    for (int64_t j = 0; j < c.k; ++j) p[size_t(i * c.k + j)] = std::exp(double(z[j]) - lse);
    const double w = in.w.empty() ? 1.0 : in.w[size_t(in.y[size_t(i)])];
    num += w * (lse - z[in.y[size_t(i)]]);
    den += w;
  }
  o[0].v[0] = float(num / den);
  for (int64_t i = 0; i < c.n; ++i) {
    const int32_t y = in.y[size_t(i)];
    const double w = in.w.empty() ? 1.0 : in.w[size_t(y)];
    for (int64_t j = 0; j < c.k; ++j) {
      const size_t e = size_t(i * c.k + j);
      o[1].v[e] = float(w * (p[e] - (j == y ? 1.0 : 0.0)) / den);
      o[2].v[e] = float(p[e]);
    }
  }
  return o;
}

// tf.train.RMSPropOptimizer / torch.optim.RMSprop in double (rmsprop_step_double, above).
Outputs reference(const RmsPropCase& c, const RmsProp::Inputs& in) {
  const RmsPropConfig cfg = c.config();
  std::vector<double> p(in.p.begin(), in.p.end()), ms(in.ms.begin(), in.ms.end()),
      mom(in.mom.begin(), in.mom.end());
  for (int s = 0; s < c.steps; ++s) rmsprop_step_double(cfg, s, in.g[size_t(s)].data(), p, ms, mom);
  return {{"params", std::vector<float>(p.begin(), p.end())},
          {"ms", std::vector<float>(ms.begin(), ms.end())},
          {"mom", std::vector<float>(mom.begin(), mom.end())},
          {"step", {float(c.steps)}}};
}

// Loops in double. The ReLU mask comes from the double pre-activation: the case data must keep
// every pre-activation away from the kink, or float and double could take different branches.
Outputs reference(const DenseGradCase& c, const DenseGrad::Inputs& in) {
  const int64_t N = c.n, I = c.in, O = c.out;
  std::vector<double> a(size_t(N * O)), dz(size_t(N * O)), dW(size_t(I * O)),
      db(static_cast<size_t>(O)), dx(size_t(N * I));
  double min_pre = 1e300;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double z = in.b[size_t(o)];
      for (int64_t i = 0; i < I; ++i)
        z += double(in.x[size_t(n * I + i)]) * in.w[size_t(i * O + o)];
      min_pre = std::min(min_pre, std::fabs(z));
      a[size_t(n * O + o)] = z > 0 ? z : 0;
      dz[size_t(n * O + o)] = z > 0 ? in.r[size_t(n * O + o)] : 0;
    }
  // A pre-activation within fp32 rounding of 0 could take the other branch in the float kernel
  // and show up as an error of ~|x| in dW/dx: printed so that such a failure explains itself.
  std::printf("  %s: smallest |pre-activation| %.3g\n", c.name, min_pre);
  for (int64_t i = 0; i < I; ++i)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t n = 0; n < N; ++n)
        dW[size_t(i * O + o)] += double(in.x[size_t(n * I + i)]) * dz[size_t(n * O + o)];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) db[size_t(o)] += dz[size_t(n * O + o)];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t o = 0; o < O; ++o)
        dx[size_t(n * I + i)] += dz[size_t(n * O + o)] * in.w[size_t(i * O + o)];
  auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  return {{"a", f(a)}, {"dW", f(dW)}, {"db", f(db)}, {"dx", f(dx)}};
}

}  // namespace engine::kernel_cases

using namespace engine::kernel_cases;
ENGINE_KERNEL_TEST(DropoutKernel, Dropout);
ENGINE_KERNEL_TEST(SoftmaxXentKernel, SoftmaxXent);
ENGINE_KERNEL_TEST(RmsPropKernel, RmsProp);
ENGINE_KERNEL_TEST(DenseGradKernel, DenseGrad);
