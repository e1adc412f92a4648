// tests/test_head.cpp: the classifier head's training kernels and the head itself: Philox
// known-answer vectors (Random123 kat_vectors), dropout statistics and mask regeneration,
// softmax / cross-entropy closed forms, finite-difference gradient checks in double (dense+bias+
// ReLU, weighted softmax-xent, the whole head with p = 0 and p = 0.5), RMSProp (TF1 and torch)
// against the formulas run in double for 3 steps, learning-rate decay, bitwise determinism and
// checkpoint/resume, the Keras weight file layout; then the CUDA twins against the CPU ones
// (skipped, with the reason printed, when no GPU is present).
// Run: ctest -R test_head  (or build/tests/test_head directly; no reference files needed).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "kernels/dense_grad.h"
#include "kernels/dropout.h"
#include "kernels/rmsprop.h"
#include "kernels/softmax_xent.h"
#include "models/head.h"
#include "test_util.h"
#ifdef ENGINE_HAVE_CUDA
#include "engine/cuda_check.h"
#endif

using namespace engine;
using engine::test::tensors_close;

namespace {

// Deterministic test data from Philox (stream 0xABC), uniform in [lo, hi).
std::vector<float> uniform(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = dropout_words(seed, 7, 0xABCu, static_cast<uint64_t>(i) >> 2).v[i & 3];
    v[i] = lo + (hi - lo) * static_cast<float>((u >> 8) * (1.0 / 16777216.0));
  }
  return v;
}
std::vector<int32_t> labels(int64_t n, int64_t k, uint64_t seed) {
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    y[i] = static_cast<int32_t>(dropout_words(seed, 9, 0xDEFu, static_cast<uint64_t>(i)).v[0] % k);
  return y;
}
std::string tmp_path(const std::string& name) {
  return ::testing::TempDir() + "test_head_" + name;
}

// Central difference of a double function of one variable, step h.
double central(const std::function<double(double)>& f, double x, double h) {
  return (f(x + h) - f(x - h)) / (2 * h);
}

}  // namespace

// Checks and prints the achieved max abs / rel error (also on success): EXPECT_CLOSE((args...)).
#define EXPECT_CLOSE(args)                                \
  do {                                                    \
    const ::testing::AssertionResult r_ = tensors_close args; \
    std::printf("  %s\n", r_.message());                  \
    EXPECT_TRUE(r_);                                      \
  } while (0)

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
    const double g = central([&](double t) { v[i] = t; return loss(false); }, v0, h);
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
    nd[i] = static_cast<float>(central([&](double t) { zd[i] = t; return loss(); }, v0, 1e-6));
    zd[i] = v0;
  }
  EXPECT_CLOSE((g.data(), nd.data(), N * K, 1e-6, 1e-4, "weighted dlogits vs FD"));
}

namespace {
// Double forward of the head with the masks the CPU head uses at its current step.
struct HeadRef {
  const HeadConfig& c;
  const HeadLayout& L;
  std::vector<double> P;  // parameter section, double
  std::vector<std::vector<uint8_t>> masks;
  const std::vector<float>& x;
  const std::vector<int32_t>& y;
  int64_t n;
  // Returns the loss; `pattern` receives the ReLU sign pattern.
  double loss(std::vector<uint8_t>* pattern) const {
    std::vector<double> in(x.begin(), x.end());
    const double scale = c.dropout > 0 ? static_cast<double>(1.f / (1.f - c.dropout)) : 1.0;
    for (size_t l = 0; l < L.layers.size(); ++l) {
      const HeadLayer& ly = L.layers[l];
      const bool last = l + 1 == L.layers.size();
      std::vector<double> out(static_cast<size_t>(n * ly.out));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < ly.out; ++o) {
          double z = P[ly.bias_off + o];
          for (int64_t i = 0; i < ly.in; ++i) z += in[r * ly.in + i] * P[ly.kernel_off + i * ly.out + o];
          if (!last) {
            if (pattern) pattern->push_back(z > 0);
            z = z > 0 ? z : 0;
            if (c.dropout > 0) z = masks[l][r * ly.out + o] ? z * scale : 0;
          }
          out[r * ly.out + o] = z;
        }
      in.swap(out);
    }
    const int64_t K = c.classes;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
      double m = -1e300, s = 0;
      for (int64_t j = 0; j < K; ++j) m = std::max(m, in[i * K + j]);
      for (int64_t j = 0; j < K; ++j) s += std::exp(in[i * K + j] - m);
      const double wy = c.class_weights.empty() ? 1.0 : c.class_weights[y[i]];
      num += wy * (m + std::log(s) - in[i * K + y[i]]);
      den += wy;
    }
    return num / den;
  }
};

void head_gradcheck(float p) {
  HeadConfig c;
  c.input = 6;
  c.hidden = {5, 4};
  c.classes = 3;
  c.dropout = p;
  c.seed = 99;
  c.class_weights = {1.f, 2.f, 0.5f};
  HeadCpu head(c);
  const int64_t n = 8;
  std::vector<float> x = uniform(n * c.input, 10, -2.f, 2.f);
  std::vector<int32_t> y = labels(n, c.classes, 11);
  // Two training steps first so the step (dropout key) is not 0 and the weights have moved.
  head.train_step(x.data(), y.data(), n);
  head.train_step(x.data(), y.data(), n);
  head.forward_backward(x.data(), y.data(), n, true);
  const HeadLayout& L = head.params().layout();
  const float* G = head.params().section(HeadSection::Grads);
  const float* P = head.params().section(HeadSection::Params);
  HeadRef ref{c, L, std::vector<double>(P, P + L.section), {}, x, y, n};
  for (size_t l = 0; l + 1 < L.layers.size(); ++l) {
    ref.masks.emplace_back(n * L.layers[l].out);
    dropout_mask_cpu(ref.masks.back().data(), n * L.layers[l].out, p,
                     DropoutKey{c.seed, head.step(), static_cast<uint32_t>(l + 1)});
  }
  std::vector<uint8_t> base;
  ref.loss(&base);
  const double h = 1e-6;
  std::vector<float> got, want;
  int64_t skipped = 0;
  for (const HeadLayer& ly : L.layers)
    for (int64_t off : {ly.kernel_off, ly.bias_off})
      for (int64_t i = 0; i < (off == ly.kernel_off ? ly.in * ly.out : ly.out); ++i) {
        const int64_t k = off + i;
        const double v0 = ref.P[k];
        std::vector<uint8_t> pp, pm;
        ref.P[k] = v0 + 1e-3;
        ref.loss(&pp);
        ref.P[k] = v0 - 1e-3;
        ref.loss(&pm);
        ref.P[k] = v0 + h;
        const double lp = ref.loss(nullptr);
        ref.P[k] = v0 - h;
        const double lm = ref.loss(nullptr);
        ref.P[k] = v0;
        // A kink within 1e-3 of the point (a ReLU flips within +-1e-3): FD is not a derivative.
        if (pp != base || pm != base) {
          ++skipped;
          continue;
        }
        got.push_back(G[k]);
        want.push_back(static_cast<float>((lp - lm) / (2 * h)));
      }
  std::printf("  p %.1f: %zu gradients checked, %lld skipped near a ReLU kink\n", p, got.size(),
              (long long)skipped);
  ASSERT_GT(got.size(), 60u);
  EXPECT_CLOSE((got.data(), want.data(), got.size(), 1e-5, 1e-3, "head grads vs FD"));
}
}  // namespace

TEST(GradCheck, WholeHeadNoDropout) { head_gradcheck(0.f); }
TEST(GradCheck, WholeHeadDropoutHalfWithFixedMask) { head_gradcheck(0.5f); }

// ---------------------------------------------------------------------------------------------
// RMSProp and learning-rate decay
// ---------------------------------------------------------------------------------------------
namespace {
void rmsprop_three_steps(RmsPropConfig c) {
  std::vector<float> p = {1.f, -2.f, 0.5f}, ms(3, c.ms_init()), mom(3, 0.f);
  const float g[3][3] = {{0.1f, -0.3f, 2.f}, {0.2f, 0.1f, -1.f}, {-0.05f, 0.4f, 0.5f}};
  std::vector<double> pd(p.begin(), p.end()), msd(3, c.ms_init()), momd(3, 0.0);
  int64_t step = 0;
  for (int s = 0; s < 3; ++s) {
    const double e = c.decay_steps > 0 ? (c.staircase ? std::floor(double(s) / c.decay_steps)
                                                      : double(s) / c.decay_steps)
                                       : 0.0;
    const double lr = c.lr * std::pow(c.decay_rate, e);
    for (int i = 0; i < 3; ++i) {
      const double gi = g[s][i];
      if (c.formula == RmsPropFormula::TF1) {
        msd[i] += (gi * gi - msd[i]) * (1 - c.rho);
        momd[i] = c.momentum * momd[i] + lr * gi / std::sqrt(msd[i] + c.eps);
        pd[i] -= momd[i];
      } else {
        msd[i] = c.rho * msd[i] + (1 - c.rho) * gi * gi;
        momd[i] = c.momentum * momd[i] + gi / (std::sqrt(msd[i]) + c.eps);
        pd[i] -= lr * momd[i];
      }
    }
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
// The head: init, determinism, checkpoint/resume, Keras file
// ---------------------------------------------------------------------------------------------
namespace {
HeadConfig full_config() {
  HeadConfig c;  // 2048 -> 512 -> 512 -> 2, dropout 0.5
  c.seed = 1234;
  c.optimizer.lr = 1e-3;
  c.optimizer.momentum = 0.9;
  c.optimizer.decay_rate = 0.9;
  c.optimizer.decay_steps = 7;
  c.optimizer.staircase = true;
  c.class_weights = {1.f, 4.f};
  return c;
}
struct Batches {
  int64_t n = 128;
  std::vector<std::vector<float>> x;
  std::vector<std::vector<int32_t>> y;
  Batches(int count, int64_t input) {
    for (int b = 0; b < count; ++b) {
      x.push_back(uniform(n * input, 1000 + b, 0.f, 1.f));
      y.push_back(labels(n, 2, 2000 + b));
    }
  }
};
}  // namespace

TEST(Head, GlorotInitAndArenaLayout) {
  HeadConfig c = full_config();
  HeadCpu h(c);
  const HeadLayout& L = h.params().layout();
  ASSERT_EQ(L.layers.size(), 3u);
  const int64_t want_params = 2048 * 512 + 512 + 512 * 512 + 512 + 512 * 2 + 2;
  int64_t count = 0;
  for (const auto& ly : L.layers) {
    count += ly.in * ly.out + ly.out;
    EXPECT_EQ(ly.kernel_off % 16, 0);
    EXPECT_EQ(ly.bias_off % 16, 0);
  }
  EXPECT_EQ(count, want_params);
  for (int l = 0; l < 3; ++l) {
    Tensor k = h.params().kernel(HeadSection::Params, l);
    const double lim = std::sqrt(6.0 / (k.dim(0) + k.dim(1)));
    double mx = 0, ss = 0;
    for (int64_t i = 0; i < k.numel(); ++i) mx = std::max(mx, std::fabs((double)k.data()[i])), ss += k.data()[i] * (double)k.data()[i];
    EXPECT_LE(mx, lim);
    EXPECT_GT(mx, 0.9 * lim);
    // Var of U(-lim, lim) = lim^2/3.
    EXPECT_NEAR(ss / k.numel(), lim * lim / 3, 0.1 * lim * lim / 3) << "layer " << l;
    Tensor b = h.params().bias(HeadSection::Params, l);
    EXPECT_EQ(test::max_abs(b), 0.0);
  }
  EXPECT_EQ(h.params().section(HeadSection::Ms)[0], 1.f);  // TF1 ms starts at one
  HeadCpu h2(c);
  EXPECT_EQ(0, std::memcmp(h.params().data(), h2.params().data(), sizeof(float) * h.params().total()));
  c.seed = 1235;
  HeadCpu h3(c);
  EXPECT_NE(0, std::memcmp(h.params().data(), h3.params().data(), sizeof(float) * h.params().section_size()));
}

TEST(Head, SameSeedIsBitIdenticalAfter50StepsAndCheckpointResumeIsExact) {
  const HeadConfig c = full_config();
  Batches B(50, c.input);
  HeadCpu a(c), b(c);
  std::vector<float> la, lb;
  for (int s = 0; s < 50; ++s) {
    la.push_back(a.train_step(B.x[s].data(), B.y[s].data(), B.n));
    lb.push_back(b.train_step(B.x[s].data(), B.y[s].data(), B.n));
  }
  EXPECT_EQ(a.step(), 50);
  EXPECT_EQ(la, lb);
  EXPECT_EQ(0, std::memcmp(a.params().data(), b.params().data(), sizeof(float) * a.params().total()))
      << "two runs with the same seed differ";
  std::printf("  loss step 0 %.5f, step 49 %.5f\n", la.front(), la.back());
  EXPECT_LT(la.back(), la.front()) << "training did not reduce the loss";

  // 20 steps, checkpoint, reload, 30 more == 50 unbroken.
  HeadCpu c20(c);
  for (int s = 0; s < 20; ++s) c20.train_step(B.x[s].data(), B.y[s].data(), B.n);
  const std::string path = tmp_path("ckpt.h5");
  c20.save_state(path);
  HeadCpu r = HeadCpu::load_state(path);
  EXPECT_EQ(r.step(), 20);
  EXPECT_EQ(r.config().hidden, c.hidden);
  EXPECT_EQ(r.config().class_weights, c.class_weights);
  std::vector<float> lr;
  for (int s = 20; s < 50; ++s) lr.push_back(r.train_step(B.x[s].data(), B.y[s].data(), B.n));
  EXPECT_EQ(std::vector<float>(la.begin() + 20, la.end()), lr);
  EXPECT_EQ(0, std::memcmp(a.params().data() , r.params().data(), sizeof(float) * a.params().section_size()))
      << "resumed parameters differ from the unbroken run";
  EXPECT_EQ(0, std::memcmp(a.params().section(HeadSection::Ms), r.params().section(HeadSection::Ms),
                           sizeof(float) * 2 * a.params().section_size()))
      << "resumed optimizer state differs";
  std::remove(path.c_str());
}

TEST(Head, PredictIsSoftmaxWithoutDropout) {
  HeadConfig c = full_config();
  c.input = 32;
  c.hidden = {16};
  c.classes = 3;
  c.class_weights.clear();
  HeadCpu h(c);
  std::vector<float> x = uniform(4 * 32, 77), p(12), p2(12);
  h.predict(x.data(), 4, p.data());
  h.predict(x.data(), 4, p2.data());
  EXPECT_EQ(p, p2);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(p[3 * i] + p[3 * i + 1] + p[3 * i + 2], 1.f, 1e-6);
  // Same as forward_backward without dropout: the loss from predict's probabilities.
  std::vector<int32_t> y = {0, 1, 2, 1};
  const float loss = h.forward_backward(x.data(), y.data(), 4, false);
  double num = 0;
  for (int i = 0; i < 4; ++i) num += -std::log((double)p[3 * i + y[i]]);
  EXPECT_NEAR(loss, num / 4, 1e-5);
}

TEST(Head, ConfigErrorsNameTheField) {
  HeadConfig c;
  c.dropout = 1.f;
  EXPECT_THROW(HeadCpu{c}, Error);
  c = HeadConfig{};
  c.class_weights = {1.f};
  try {
    HeadCpu h(c);
    FAIL() << "1 class weight for 2 classes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class_weights"), std::string::npos) << e.what();
  }
  EXPECT_THROW(HeadCpu::load_state(tmp_path("does_not_exist.h5")), Error);
}

// The Keras head file (write/read round trip, Keras as the judge): tests/test_predict.cpp.

// ---------------------------------------------------------------------------------------------
// CUDA twins vs the CPU kernels (same inputs, same bodies). Skipped without a GPU.
// ---------------------------------------------------------------------------------------------
#ifdef ENGINE_HAVE_CUDA
namespace {
#define SKIP_WITHOUT_GPU() ENGINE_SKIP_WITHOUT_GPU(cuda_availability())

// Move-only device buffer for the tests.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, sizeof(T) * (n ? n : 1)), "test buffer"); }
  Dev(const std::vector<T>& v) : Dev(v.size()) { up(v); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void up(const std::vector<T>& v) {
    CUDA_CHECK(cudaMemcpy(p, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> down() const {
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost), "download");
    return v;
  }
};
}  // namespace

TEST(Cuda, DropoutMatchesCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  const int64_t n = (1 << 20) + 3;
  std::vector<float> x = uniform(n, 21), g = uniform(n, 22), y(n), dx(n);
  Dev<float> dx_(x), dg(g), dy(n), ddx(n);
  Dev<int64_t> step(std::vector<int64_t>{17});
  dropout_forward_cuda(dx_.p, dy.p, n, 0.5f, 99, step.p, 2, nullptr);
  dropout_backward_cuda(dg.p, ddx.p, n, 0.5f, 99, step.p, 2, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize(), "dropout test");
  dropout_forward_cpu(x.data(), y.data(), n, 0.5f, DropoutKey{99, 17, 2});
  dropout_backward_cpu(g.data(), dx.data(), n, 0.5f, DropoutKey{99, 17, 2});
  EXPECT_TRUE(dy.down() == y) << "forward differs from the CPU twin";
  EXPECT_TRUE(ddx.down() == dx) << "backward differs from the CPU twin";
}

TEST(Cuda, SoftmaxXentMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int64_t K : {2, 5, 1000}) {
    const int64_t N = 130;
    std::vector<float> z = uniform(N * K, 30 + K, -8.f, 8.f), g(N * K), p(N * K);
    z[0] = 1e4f;
    std::vector<int32_t> y = labels(N, K, 31);
    std::vector<float> w = uniform(K, 32, 0.5f, 2.f);
    const float loss = softmax_xent_cpu(z.data(), y.data(), w.data(), N, K, g.data());
    softmax_cpu(z.data(), p.data(), N, K);
    Dev<float> dz(z), dg(N * K), dp(N * K), dw(w), dloss(1), scratch(2 * N + 2);
    Dev<int32_t> dyl(y);
    softmax_xent_cuda(dz.p, dyl.p, dw.p, N, K, dg.p, dloss.p, scratch.p, nullptr);
    softmax_cuda(dz.p, dp.p, N, K, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize(), "softmax test");
    EXPECT_NEAR(dloss.down()[0], loss, 1e-6 * std::fabs(loss) + 1e-7) << "K " << K;
    EXPECT_CLOSE((dg.down().data(), g.data(), N * K, 1e-8, 1e-5, "dlogits K " + std::to_string(K)));
    EXPECT_CLOSE((dp.down().data(), p.data(), N * K, 1e-8, 1e-5, "probs K " + std::to_string(K)));
  }
}

TEST(Cuda, RmsPropMatchesCpuBitForBitBothFormulas) {
  SKIP_WITHOUT_GPU();
  for (RmsPropFormula f : {RmsPropFormula::TF1, RmsPropFormula::Torch}) {
    RmsPropConfig c;
    c.formula = f;
    c.eps = RmsPropConfig::default_eps(f);
    c.momentum = 0.9;
    c.lr = 0.01;
    c.decay_rate = 0.7;
    c.decay_steps = 2;
    const int64_t n = (1 << 20) + 5;
    std::vector<float> p = uniform(n, 40), ms(n, c.ms_init()), mom(n, 0.f);
    Dev<float> dp(p), dms(ms), dmom(mom), dg(n);
    Dev<int64_t> dstep(std::vector<int64_t>{0});
    int64_t step = 0;
    for (int s = 0; s < 3; ++s) {
      std::vector<float> g = uniform(n, 41 + s);
      dg.up(g);
      rmsprop_update_cuda(dp.p, dg.p, dms.p, dmom.p, n, c, dstep.p, nullptr);
      rmsprop_update_cpu(p.data(), g.data(), ms.data(), mom.data(), n, c, &step);
    }
    CUDA_CHECK(cudaDeviceSynchronize(), "rmsprop test");
    EXPECT_EQ(dstep.down()[0], 3);
    EXPECT_CLOSE((dp.down().data(), p.data(), n, 0, 0, "params (bitwise)"));
    EXPECT_CLOSE((dms.down().data(), ms.data(), n, 0, 0, "ms (bitwise)"));
    EXPECT_CLOSE((dmom.down().data(), mom.data(), n, 0, 0, "mom (bitwise)"));
  }
}

TEST(Cuda, DenseGradKernelsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 37, I = 70, O = 45;
  std::vector<float> x = uniform(N * I, 50), W = uniform(I * O, 51), b = uniform(O, 52), r = uniform(N * O, 53);
  std::vector<float> a(N * O), dz(N * O), dW(I * O), db(O), dx(N * I);
  sgemm_rowmajor_cpu(false, false, N, O, I, 1.f, x.data(), I, W.data(), O, 0.f, a.data(), O, "t");
  bias_act_forward_cpu(a.data(), b.data(), N, O, true);
  relu_backward_cpu(r.data(), a.data(), dz.data(), N * O);
  sgemm_rowmajor_cpu(true, false, I, O, N, 1.f, x.data(), I, dz.data(), O, 0.f, dW.data(), O, "t");
  bias_grad_cpu(dz.data(), db.data(), N, O);
  sgemm_rowmajor_cpu(false, true, N, I, O, 1.f, dz.data(), O, W.data(), O, 0.f, dx.data(), I, "t");
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h), "test handle");
  Dev<float> gx(x), gW(W), gb(b), gr(r), ga(N * O), gdz(N * O), gdW(I * O), gdb(O), gdx(N * I);
  sgemm_rowmajor_cuda(h, false, false, N, O, I, 1.f, gx.p, I, gW.p, O, 0.f, ga.p, O, "t");
  bias_act_forward_cuda(ga.p, gb.p, N, O, true, nullptr);
  relu_backward_cuda(gr.p, ga.p, gdz.p, N * O, nullptr);
  sgemm_rowmajor_cuda(h, true, false, I, O, N, 1.f, gx.p, I, gdz.p, O, 0.f, gdW.p, O, "t");
  bias_grad_cuda(gdz.p, gdb.p, N, O, nullptr);
  sgemm_rowmajor_cuda(h, false, true, N, I, O, 1.f, gdz.p, O, gW.p, O, 0.f, gdx.p, I, "t");
  CUDA_CHECK(cudaDeviceSynchronize(), "dense test");
  cublasDestroy(h);
  // cuBLAS may use TF32 only when asked (default math mode is FP32): float rounding differences.
  EXPECT_CLOSE((ga.down().data(), a.data(), N * O, 1e-5, 1e-4, "relu(xW+b)"));
  EXPECT_CLOSE((gdW.down().data(), dW.data(), I * O, 1e-5, 1e-4, "dW"));
  EXPECT_CLOSE((gdb.down().data(), db.data(), O, 1e-5, 1e-4, "db"));
  EXPECT_CLOSE((gdx.down().data(), dx.data(), N * I, 1e-5, 1e-4, "dx"));
}

// CPU vs GPU, TEACHER-FORCED: every step the GPU head is rebuilt from the CPU's state (params,
// ms, mom, step counter), so the two cannot drift apart. (A free 10-step comparison lets cuBLAS's
// other summation order grow through RMSProp's g/sqrt(ms), which turns a last-bit difference of a
// near-zero gradient into up to a full ~lr step: whether it passes is luck.) Per step:
//  loss     same weights and dropout masks, logits differ by GEMM rounding (~1e-6 relative):
//           |d| <= 1e-5 |loss| + 1e-6.
//  gradient |d| <= 1e-3 max|g| + 1e-3 |g|: GEMM rounding is ~1e-6 of the scale; a ReLU
//           pre-activation within rounding of 0 may switch one example's path through one unit,
//           a term of ~1/n of the gradient scale (n = 128): 1e-3 max|g| covers that too.
//  update   the CPU kernel applied to the GPU's own gradient from the same state gives the GPU's
//           params, ms and mom bit for bit (the twins are bit-identical: see
//           Cuda.RmsPropMatchesCpuBitForBitBothFormulas), so no conditioning enters.
TEST(Cuda, HeadCudaStepsMatchHeadCpuTeacherForced) {
  SKIP_WITHOUT_GPU();
  const HeadConfig c = full_config();
  Batches B(10, c.input);
  HeadCpu cpu(c);
  const int64_t P = cpu.params().section_size();
  HeadParams host(c);
  auto state_of = [&](const HeadCpu& h) {
    HeadState st;
    st.config = c;
    st.step = h.step();
    const float* a = h.params().section(HeadSection::Params);
    st.params.assign(a, a + P);
    a = h.params().section(HeadSection::Ms);
    st.ms.assign(a, a + P);
    a = h.params().section(HeadSection::Mom);
    st.mom.assign(a, a + P);
    return st;
  };
  for (int s = 0; s < 10; ++s) {
    const HeadState st = state_of(cpu);
    HeadCuda gpu(st);
    const float lg = gpu.train_step(B.x[s].data(), B.y[s].data(), B.n);
    const float lc = cpu.train_step(B.x[s].data(), B.y[s].data(), B.n);
    EXPECT_NEAR(lg, lc, 1e-5 * std::fabs(lc) + 1e-6) << "step " << s;
    EXPECT_EQ(gpu.step(), st.step + 1);
    gpu.copy_arena_to(host);
    const float* gc = cpu.params().section(HeadSection::Grads);
    const float* gg = host.section(HeadSection::Grads);
    double gmax = 0;
    for (int64_t i = 0; i < P; ++i)
      if (std::fabs(gc[i]) > gmax) gmax = std::fabs(gc[i]);
    const std::string at = ", step " + std::to_string(s);
    EXPECT_CLOSE((gg, gc, P, 1e-3 * gmax, 1e-3, "gradient" + at));
    std::vector<float> p = st.params, ms = st.ms, mom = st.mom;
    int64_t step = st.step;
    rmsprop_update_cpu(p.data(), gg, ms.data(), mom.data(), P, c.optimizer, &step);
    EXPECT_CLOSE((host.section(HeadSection::Params), p.data(), P, 0, 0, "params (bitwise)" + at));
    EXPECT_CLOSE((host.section(HeadSection::Ms), ms.data(), P, 0, 0, "ms (bitwise)" + at));
    EXPECT_CLOSE((host.section(HeadSection::Mom), mom.data(), P, 0, 0, "mom (bitwise)" + at));
  }
  EXPECT_EQ(cpu.step(), 10);
  HeadCuda gpu(state_of(cpu));
  std::vector<float> pc(B.n * 2), pg(B.n * 2);
  cpu.predict(B.x[0].data(), B.n, pc.data());
  gpu.predict(B.x[0].data(), B.n, pg.data());
  EXPECT_CLOSE((pg.data(), pc.data(), pc.size(), 1e-4, 1e-3, "predict"));
  // Checkpoint written from the GPU resumes on the CPU.
  const std::string path = tmp_path("gpu_ckpt.h5");
  gpu.save_state(path);
  HeadCpu r = HeadCpu::load_state(path);
  EXPECT_EQ(r.step(), 10);
  std::remove(path.c_str());
}
#else
TEST(Cuda, NotBuilt) { GTEST_SKIP() << "built without CUDA (ENGINE_HAVE_CUDA undefined)"; }
#endif
