// tests/test_head_training.cpp: HeadCpu's training step against PyTorch (tests/reference/
// train_reference.py: torch.optim.RMSprop, and the TF1 formula written in torch) and against
// TensorFlow's own tf.compat.v1.train.RMSPropOptimizer + exponential_decay (tests/reference/
// tf_rmsprop_reference.py), TEACHER-FORCED: every step starts from the reference's state (weights,
// ms, momentum, step counter; layout in tests/reference/teacher_forced_common.py), so float32
// differences cannot accumulate. (Two free float32 100-step runs of this problem diverge by
// rounding: RMSProp's g/sqrt(ms) turns a last-bit difference of a near-zero gradient into up to a
// full step, and which machine such a comparison passes on is luck. No free trajectory is compared
// here: a short one would only test the same steps again, a long one is not well conditioned.)
// Cases: `small` 256-64-64-2, batch 64, 40 steps (crossing 4 smooth decays / 2 staircase steps);
// `full` 2048-512-512-2, batch 128, one step at step counter 30. Dropout off, class weights [1, 3].
//
// Per step s, with u = 2^-24 (float32 unit roundoff); every maximum is printed:
//  lr      rmsprop_learning_rate(step0 + s) vs the reference's: |d| <= 8u lr (TF computes the
//          decay in float32, we in double rounded once; measured <= 1 ulp).
//  init    TF's initial rms / momentum slots (rms ONE, momentum zero) == HeadCpu's, exactly.
//  loss    |d| <= 2 max|dz| + 8u (|loss| + max|z|): each example's cross-entropy is 2-Lipschitz
//          in the max-norm of its logits; dz is the forward error budget below.
//  grad    |d| <= kappa S + E + F per element, all computed in double from the reference's state:
//          S = |h_prev|^T . Ds, Ds = |dlogits| propagated down through |W|^T and the ReLU masks:
//            the running-error scale of the backward sums; any summation order of a float32 sum
//            of terms whose magnitudes add up to S errs by a small multiple of u S (kappa = 16u).
//          E = the forward error's share: dz budget = 16 x our measured worst float32 error of
//            the layer (relative to its abs-scale Sz = |h_prev|-scale . |W| + |b|), propagated
//            into dlogits (softmax is 1-Lipschitz) and down, and through the error of h_prev.
//            (Another program's float32 GEMM errs by the same order as ours: the reference's
//            and our worst error against the double gradient, in units of tau, are printed;
//            measured <= 0.06 for both, and ours vs the reference <= 0.12 tau.)
//          F = ReLU ties: a pre-activation within 16x our measured near-zero error of 0 may fall
//            on either side in the two programs; the gradient terms it gates (upstream gradient
//            times the input, propagated down in absolute values) are added to the tolerance of
//            the elements they reach, so such a tie cannot fail the test by luck.
//  formula our rmsprop_update_cpu on the REFERENCE's state and gradient vs its state after the
//          step: only element-wise float ops differ (fma or not, rounding order, lr's last bit):
//          mom |d| <= 8u (m|mom| + |upd|) + (dlr/lr)|upd|, ms |d| <= 8u ms, params |d| <= 4u|p| +
//          lr-factor * (mom tolerance + 2u |change|): a few ulps, independent of conditioning.
//  state   our whole step (our gradient) vs the reference's state after: the update is monotone
//          in g (mom, params) or in g^2 (ms), so the update at g_ref +- tau (tau = the gradient
//          tolerance) brackets every result a gradient within tau can give; tolerance = bracket +
//          formula tolerance. It is a few ulps where the step is well conditioned and opens
//          exactly where g/sqrt(ms) amplifies (|g| ~ tau with small ms, e.g. torch's first step
//          from ms = 0, where the update is lr * sign(g)); the number of elements whose bracket
//          exceeds 1% of the step bound lr/sqrt(1-rho)/(1-m) and the worst difference elsewhere
//          (in step bounds) are printed.
// HEAD_TRAINING_VERBOSE=1 prints every step's maxima.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/hdf5_io.h"
#include "kernels/dense_grad.h"
#include "kernels/rmsprop.h"
#include "models/head.h"
#include "test_util.h"

using namespace engine;

namespace {
constexpr double kU = 5.9604644775390625e-08;  // 2^-24
constexpr double kKappa = 16 * kU;             // backward rounding, relative to S (see top)

struct RefRun {
  const char* file;
  const char* variant;
  const char* kase;
  RmsPropFormula formula;
  double lr, rho, momentum, eps, decay_rate;
  int64_t decay_steps;
  bool staircase;
};
constexpr RmsPropFormula kTF1 = RmsPropFormula::TF1, kTorch = RmsPropFormula::Torch;
const char* const kTorchFile = "train_reference.h5";
const char* const kTfFile = "tf_rmsprop_reference.h5";
const RefRun kRuns[] = {
    {kTorchFile, "tf1_m0", "small", kTF1, 1e-3, 0.9, 0.0, 1e-10, 0.9, 10, false},
    {kTorchFile, "tf1_m09_stair", "small", kTF1, 1e-3, 0.9, 0.9, 1e-10, 0.5, 15, true},
    {kTorchFile, "tf1_m09_stair", "full", kTF1, 1e-3, 0.9, 0.9, 1e-10, 0.5, 15, true},
    {kTorchFile, "torch_m0", "small", kTorch, 1e-3, 0.9, 0.0, 1e-8, 0.9, 10, false},
    {kTorchFile, "torch_m09_stair", "small", kTorch, 1e-3, 0.9, 0.9, 1e-8, 0.5, 15, true},
    {kTorchFile, "torch_m09_stair", "full", kTorch, 1e-3, 0.9, 0.9, 1e-8, 0.5, 15, true},
    {kTfFile, "tf1_m0", "small", kTF1, 1e-3, 0.9, 0.0, 1e-10, 0.9, 10, false},
    {kTfFile, "tf1_m0_stair", "small", kTF1, 1e-3, 0.9, 0.0, 1e-10, 0.5, 15, true},
    {kTfFile, "tf1_m09", "small", kTF1, 1e-3, 0.9, 0.9, 1e-10, 0.9, 10, false},
    {kTfFile, "tf1_m09_stair", "small", kTF1, 1e-3, 0.9, 0.9, 1e-10, 0.5, 15, true},
    {kTfFile, "tf1_m09_eps1", "small", kTF1, 1e-3, 0.9, 0.9, 1.0, 0.9, 10, false},
};

// One tensor of every layer (kernel, bias), stacked over steps: [layer][2] -> flat floats.
using Stack = std::vector<std::vector<std::vector<float>>>;

// Worst |got - want| / tol over a tensor, and whether all are within.
struct Check {
  double worst_ratio = 0, max_abs = 0;
  int64_t bad = 0, n = 0, worst_at = -1;
  float got = 0, want = 0;
  void add(const float* g, const float* w, const double* tol, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      const double d = std::fabs(static_cast<double>(g[i]) - w[i]);
      const double r = d / (tol[i] > 0 ? tol[i] : 1e-300);
      if (!(d <= tol[i])) ++bad;
      if (!(r <= worst_ratio)) worst_ratio = r, worst_at = n + i, got = g[i], want = w[i];
      max_abs = std::max(max_abs, d);
    }
    n += count;
  }
  std::string str() const {
    char b[256];
    std::snprintf(b, sizeof b, "max |d| %.3g, worst |d|/tol %.3g (%lld of %lld over)", max_abs,
                  worst_ratio, (long long)bad, (long long)n);
    return b;
  }
};

// The double-precision pass over the reference's state: gradient, error scales, ReLU ties.
struct Scales {
  double loss = 0, loss_tol = 0, our_fwd_err = 0;
  int64_t ties = 0;
  // [kernel|bias][layer]: gradient, backward rounding scale S, forward-error term E, tie term F.
  std::vector<std::vector<double>> g[2], s[2], e[2], f[2];
};

Scales double_pass(const std::vector<int64_t>& dims, const std::vector<const float*>& W,
                   const std::vector<const float*>& bias, const float* x, const int32_t* y,
                   const std::vector<float>& cw, int64_t B) {
  const size_t L = dims.size() - 1;
  Scales r;
  for (int t = 0; t < 2; ++t)
    for (auto* v : {&r.g[t], &r.s[t], &r.e[t], &r.f[t]}) v->assign(L, {});
  // Forward in double (z, h), in float32 as the engine does it (our error), and the running
  // abs-scale sz = |h_prev|-scale . |W| + |b| that bounds every summation order's error.
  std::vector<std::vector<double>> h(L + 1), z(L + 1), hs(L + 1), sz(L + 1), fe(L + 1);
  std::vector<double> rel_err(L + 1, 0.0);
  std::vector<float> h32(x, x + B * dims[0]);
  h[0].assign(x, x + B * dims[0]);
  hs[0].resize(h[0].size());
  for (size_t i = 0; i < h[0].size(); ++i) hs[0][i] = std::fabs(h[0][i]);
  double near = 0;  // our worst error / sz among near-zero pre-activations (the ReLU ties' scale)
  for (size_t l = 1; l <= L; ++l) {
    const int64_t in = dims[l - 1], out = dims[l];
    const float* w = W[l - 1];
    z[l].assign(B * out, 0.0);
    sz[l].assign(B * out, 0.0);
    std::vector<double> wabs(w, w + in * out);
    for (auto& v : wabs) v = std::fabs(v);
    for (int64_t b = 0; b < B; ++b) {
      double* zr = &z[l][b * out];
      double* sr = &sz[l][b * out];
      for (int64_t k = 0; k < in; ++k) {
        const double hv = h[l - 1][b * in + k], hsv = hs[l - 1][b * in + k];
        if (hsv == 0) continue;
        const float* wr = w + k * out;
        const double* ar = &wabs[k * out];
        for (int64_t j = 0; j < out; ++j) zr[j] += hv * wr[j], sr[j] += hsv * ar[j];
      }
      for (int64_t j = 0; j < out; ++j) zr[j] += bias[l - 1][j], sr[j] += std::fabs(bias[l - 1][j]);
    }
    std::vector<float> z32(B * out);
    sgemm_rowmajor_cpu(false, false, B, out, in, 1.f, h32.data(), in, w, out, 0.f, z32.data(), out,
                       "double_pass");
    for (int64_t i = 0; i < B * out; ++i) {
      z32[i] += bias[l - 1][i % out];
      if (sz[l][i] > 0) {
        const double e = std::fabs(z32[i] - z[l][i]) / sz[l][i];
        rel_err[l] = std::max(rel_err[l], e);
        if (std::fabs(z[l][i]) <= sz[l][i] / 1024) near = std::max(near, e);
      }
    }
    const bool last = l == L;
    h[l].resize(B * out);
    hs[l].resize(B * out);
    h32.resize(B * out);
    for (int64_t i = 0; i < B * out; ++i) {
      const bool on = last || z[l][i] > 0;
      h[l][i] = on ? z[l][i] : 0.0;
      hs[l][i] = on ? sz[l][i] : 0.0;
      h32[i] = last ? z32[i] : std::max(z32[i], 0.f);
    }
    r.our_fwd_err = std::max(r.our_fwd_err, rel_err[l]);
  }
  // Pre-activations within zeta sz of 0 may fall on either side of the ReLU in another float32
  // program; the forward error budget of z is 16x our measured worst error in its layer.
  const double zeta = 16 * std::max(near, kU / 16);
  auto tie = [&](size_t l, int64_t i) { return std::fabs(z[l][i]) <= zeta * sz[l][i]; };
  for (size_t l = 1; l <= L; ++l) {
    fe[l].resize(z[l].size());
    for (size_t i = 0; i < z[l].size(); ++i)
      fe[l][i] = (l == L || z[l][i] > 0 || tie(l, i))
                     ? 16 * std::max(rel_err[l], kU / 256) * sz[l][i]
                     : 0.0;
  }
  // Loss and dlogits (weighted mean of cross-entropies, as torch's CrossEntropyLoss(weight)).
  const int64_t K = dims[L];
  double wsum = 0, max_fe = 0, max_z = 0;
  for (int64_t b = 0; b < B; ++b) wsum += cw[y[b]];
  std::vector<double> d(B * K), ds(B * K), dd(B * K);
  for (int64_t b = 0; b < B; ++b) {
    const double* zr = &z[L][b * K];
    double m = zr[0], se = 0, fmax = 0;
    for (int64_t j = 1; j < K; ++j) m = std::max(m, zr[j]);
    for (int64_t j = 0; j < K; ++j) {
      se += std::exp(zr[j] - m);
      fmax = std::max(fmax, fe[L][b * K + j]);
      max_z = std::max(max_z, std::fabs(zr[j]));
    }
    max_fe = std::max(max_fe, fmax);
    const double wb = cw[y[b]] / wsum;
    r.loss += wb * (m + std::log(se) - zr[y[b]]);
    for (int64_t j = 0; j < K; ++j) {
      d[b * K + j] = wb * (std::exp(zr[j] - m) / se - (j == y[b] ? 1.0 : 0.0));
      ds[b * K + j] = std::fabs(d[b * K + j]);
      dd[b * K + j] = wb * fmax;  // softmax is 1-Lipschitz from max-norm to max-norm
    }
  }
  // Each example's loss is 2-Lipschitz in the max-norm of its logits; log/exp/sum rounding.
  r.loss_tol = 2 * max_fe + 8 * kU * (std::fabs(r.loss) + max_z);
  // Backward: gradient; S = |h_prev| . Ds (Ds: |dlogits| propagated through |W|, masked),
  // E = forward error of h_prev times |d| + |h_prev| times the logits error propagated back.
  std::vector<std::vector<double>> up(L + 1), dl(L + 1), dsl(L + 1), ddl(L + 1);
  dl[L] = d, dsl[L] = ds, ddl[L] = dd;
  for (size_t l = L; l >= 1; --l) {
    const int64_t in = dims[l - 1], out = dims[l];
    auto &gk = r.g[0][l - 1], &gb = r.g[1][l - 1], &sk = r.s[0][l - 1], &sb = r.s[1][l - 1];
    auto &ek = r.e[0][l - 1], &eb = r.e[1][l - 1];
    gk.assign(in * out, 0.0), sk.assign(in * out, 0.0), ek.assign(in * out, 0.0);
    gb.assign(out, 0.0), sb.assign(out, 0.0), eb.assign(out, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const double* dr = &dl[l][b * out];
      const double* sr = &dsl[l][b * out];
      const double* er = &ddl[l][b * out];
      for (int64_t j = 0; j < out; ++j) gb[j] += dr[j], sb[j] += sr[j], eb[j] += er[j];
      for (int64_t k = 0; k < in; ++k) {
        const double hv = h[l - 1][b * in + k], ha = std::fabs(hv);
        const double he = l >= 2 ? fe[l - 1][b * in + k] : 0.0;  // x is exact
        if (ha == 0 && he == 0) continue;
        double* gr = &gk[k * out];
        double* ss = &sk[k * out];
        double* ee = &ek[k * out];
        for (int64_t j = 0; j < out; ++j)
          gr[j] += hv * dr[j], ss[j] += ha * sr[j], ee[j] += he * (sr[j] + er[j]) + ha * er[j];
      }
    }
    if (l == 1) break;
    const float* w = W[l - 1];
    up[l - 1].assign(B * in, 0.0);
    dl[l - 1].assign(B * in, 0.0);
    dsl[l - 1].assign(B * in, 0.0);
    ddl[l - 1].assign(B * in, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < in; ++k) {
        double a = 0, as = 0, ae = 0;
        for (int64_t j = 0; j < out; ++j) {
          const double wv = w[k * out + j];
          a += dl[l][b * out + j] * wv;
          as += dsl[l][b * out + j] * std::fabs(wv);
          ae += ddl[l][b * out + j] * std::fabs(wv);
        }
        const int64_t i = b * in + k;
        up[l - 1][i] = a;
        const bool on = z[l - 1][i] > 0;
        dl[l - 1][i] = on ? a : 0.0;
        dsl[l - 1][i] = on ? as : 0.0;
        ddl[l - 1][i] = on ? ae : 0.0;
      }
  }
  for (size_t l = 0; l < L; ++l) {
    r.f[0][l].assign(r.g[0][l].size(), 0.0);
    r.f[1][l].assign(r.g[1][l].size(), 0.0);
  }
  // A tie at hidden layer l (pre-activation z[l], l = 1..L-1) gates up[l][b, j] (the gradient
  // arriving at that unit): add the gated term to dense_l's gradient and, through |W|, to every
  // layer below.
  for (size_t l = 1; l < L; ++l)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < dims[l]; ++j) {
        const int64_t i = b * dims[l] + j;
        if (!tie(l, i)) continue;
        ++r.ties;
        std::vector<double> a(dims[l], 0.0);
        a[j] = std::fabs(up[l][i]) + 1e-300;
        for (size_t m = l; m >= 1; --m) {
          const int64_t in = dims[m - 1], out = dims[m];
          auto& fk = r.f[0][m - 1];
          auto& fb = r.f[1][m - 1];
          for (int64_t jj = 0; jj < out; ++jj) {
            if (a[jj] == 0) continue;
            fb[jj] += a[jj];
            for (int64_t k = 0; k < in; ++k)
              fk[k * out + jj] += std::fabs(h[m - 1][b * in + k]) * a[jj];
          }
          if (m == 1) break;
          std::vector<double> na(in, 0.0);
          for (int64_t k = 0; k < in; ++k) {
            const int64_t ik = b * in + k;
            if (!(z[m - 1][ik] > 0 || tie(m - 1, ik))) continue;
            for (int64_t jj = 0; jj < out; ++jj) na[k] += std::fabs(W[m - 1][k * out + jj]) * a[jj];
          }
          a.swap(na);
        }
      }
  return r;
}

class HeadTraining : public ::testing::TestWithParam<int> {};

// T > 0: (T, ...) stacked over steps; T == 0: one unstacked tensor per layer.
Stack read_stack(hid_t g, const std::string& key, const std::vector<int64_t>& dims, int64_t T,
                 const std::string& path) {
  Stack s(dims.size() - 1);
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    const std::string n = key + "/dense_" + std::to_string(l + 1);
    const Shape k = T > 0 ? Shape{T, dims[l], dims[l + 1]} : Shape{dims[l], dims[l + 1]};
    const Shape b = T > 0 ? Shape{T, dims[l + 1]} : Shape{dims[l + 1]};
    s[l].push_back(h5_read_float_checked(g, n + "/kernel", k, path));
    s[l].push_back(h5_read_float_checked(g, n + "/bias", b, path));
  }
  return s;
}
}  // namespace

TEST_P(HeadTraining, TeacherForcedStepsMatchReference) {
  const RefRun& v = kRuns[GetParam()];
  const std::string path = test::reference_file(v.file);
  H5File f = H5File::open_read(path);
  ASSERT_EQ(h5_read_int_attr(f.id(), "format_version", path), 2) << path;
  ASSERT_EQ(h5_read_int_attr(f.id(), "complete", path), 1) << path;
  H5Id cg = h5_open_group(f.id(), std::string("cases/") + v.kase, path);
  const int64_t T = h5_read_int_attr(cg.get(), "steps", path);
  const int64_t B = h5_read_int_attr(cg.get(), "batch", path);
  std::vector<int64_t> dims{h5_read_int_attr(cg.get(), "input", path)};
  const int64_t nh = h5_read_int_attr(cg.get(), "num_hidden", path);
  for (int64_t i = 0; i < nh; ++i)
    dims.push_back(h5_read_int_attr(cg.get(), "hidden_" + std::to_string(i), path));
  dims.push_back(h5_read_int_attr(cg.get(), "classes", path));
  const size_t L = dims.size() - 1;
  H5Id vg = h5_open_group(f.id(), v.variant, path);
  ASSERT_EQ(h5_read_string_attr(vg.get(), "formula", path), v.formula == kTF1 ? "tf1" : "torch");
  ASSERT_EQ(h5_read_int_attr(vg.get(), "decay_steps", path), v.decay_steps);
  ASSERT_EQ(h5_read_int_attr(vg.get(), "staircase", path), v.staircase ? 1 : 0);
  H5Id rg = h5_open_group(vg.get(), v.kase, path);
  const int64_t step0 = h5_read_int_attr(rg.get(), "step0", path);

  HeadConfig c;
  c.input = dims[0];
  c.hidden.assign(dims.begin() + 1, dims.end() - 1);
  c.classes = dims[L];
  c.dropout = 0.f;
  c.class_weights = h5_read_float_checked(f.id(), "class_weights", Shape{c.classes}, path);
  c.optimizer = RmsPropConfig{v.formula, v.lr,         v.rho,         v.momentum,
                              v.eps,     v.decay_rate, v.decay_steps, v.staircase};
  const RmsPropConfig& o = c.optimizer;
  HeadCpu head(c);
  HeadParams& A = head.params();

  const auto x = h5_read_float_checked(cg.get(), "x", Shape{T, B, dims[0]}, path);
  const auto yf = h5_read_float_checked(cg.get(), "y", Shape{T, B}, path);
  const std::vector<int32_t> y(yf.begin(), yf.end());
  const auto want_lr = h5_read_float_checked(rg.get(), "lr", Shape{T}, path);
  const auto want_loss = h5_read_float_checked(rg.get(), "loss", Shape{T}, path);
  const Stack init = read_stack(cg.get(), "init", dims, 0, path);
  const Stack rgrad = read_stack(rg.get(), "grads", dims, T, path);
  const Stack rp = read_stack(rg.get(), "params", dims, T, path);
  const Stack rms = read_stack(rg.get(), "ms", dims, T, path);
  const Stack rmom = read_stack(rg.get(), "mom", dims, T, path);
  // torch with momentum 0 keeps no momentum buffer (the file holds zeros; ours holds the update,
  // multiplied by 0 in the next step): not compared.
  const bool cmp_mom = !(v.formula == kTorch && v.momentum == 0);

  // Initial optimizer slots: the reference's own (TF: rms initialised to ONE by TF) vs ours.
  Stack ms0(L), mom0(L);
  const bool have_init = h5_exists(rg.get(), "ms_init");
  for (size_t l = 0; l < L; ++l)
    for (int t = 0; t < 2; ++t) {
      const int64_t n = t == 0 ? dims[l] * dims[l + 1] : dims[l + 1];
      ms0[l].push_back(std::vector<float>(n, o.ms_init()));
      mom0[l].push_back(std::vector<float>(n, 0.f));
    }
  if (have_init) {
    const Stack tms = read_stack(rg.get(), "ms_init", dims, 0, path);
    const Stack tmom = read_stack(rg.get(), "mom_init", dims, 0, path);
    for (size_t l = 0; l < L; ++l)
      for (int t = 0; t < 2; ++t) {
        Tensor gm = t == 0 ? A.kernel(HeadSection::Ms, (int)l) : A.bias(HeadSection::Ms, (int)l);
        Tensor gv = t == 0 ? A.kernel(HeadSection::Mom, (int)l) : A.bias(HeadSection::Mom, (int)l);
        EXPECT_TRUE(test::tensors_close(gm.data(), tms[l][t].data(), gm.numel(), 0, 0,
                                        "initial ms dense_" + std::to_string(l + 1)));
        EXPECT_TRUE(test::tensors_close(gv.data(), tmom[l][t].data(), gv.numel(), 0, 0,
                                        "initial mom dense_" + std::to_string(l + 1)));
      }
    std::printf("  initial slots: reference ms %g, mom %g; ours ms %g, mom %g\n", tms[0][0][0],
                tmom[0][0][0], A.kernel(HeadSection::Ms, 0).data()[0],
                A.kernel(HeadSection::Mom, 0).data()[0]);
  }

  const bool verbose = std::getenv("HEAD_TRAINING_VERBOSE") != nullptr;
  const char* names[2] = {"kernel", "bias"};
  Check c_grad, c_formula[3], c_state[3];  // [params, ms, mom]
  double worst_loss_ratio = 0, worst_lr_rel = 0, worst_our_grad = 0, worst_ref_grad = 0;
  double worst_well = 0;  // worst state |d| / (step bound) where the bracket is < 1% of the bound
  int64_t ties = 0, opened = 0, total = 0;
  const double m = v.momentum;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t step = step0 + s;
    // Impose the reference's state before step s.
    std::vector<const float*> Wb(L), bb(L);
    for (size_t l = 0; l < L; ++l) {
      const int64_t nk = dims[l] * dims[l + 1], nb = dims[l + 1];
      const float* pk = s == 0 ? init[l][0].data() : rp[l][0].data() + (s - 1) * nk;
      const float* pb = s == 0 ? init[l][1].data() : rp[l][1].data() + (s - 1) * nb;
      const float* mk = s == 0 ? ms0[l][0].data() : rms[l][0].data() + (s - 1) * nk;
      const float* mb = s == 0 ? ms0[l][1].data() : rms[l][1].data() + (s - 1) * nb;
      const float* vk = s == 0 ? mom0[l][0].data() : rmom[l][0].data() + (s - 1) * nk;
      const float* vb = s == 0 ? mom0[l][1].data() : rmom[l][1].data() + (s - 1) * nb;
      head.set_layer((int)l, pk, pb);
      std::copy(mk, mk + nk, A.kernel(HeadSection::Ms, (int)l).data());
      std::copy(mb, mb + nb, A.bias(HeadSection::Ms, (int)l).data());
      std::copy(vk, vk + nk, A.kernel(HeadSection::Mom, (int)l).data());
      std::copy(vb, vb + nb, A.bias(HeadSection::Mom, (int)l).data());
      Wb[l] = pk, bb[l] = pb;
    }
    head.set_step(step);
    // Learning rate of this step.
    const float lr = rmsprop_learning_rate(o, step);
    const double lr_rel = std::fabs((double)lr - want_lr[s]) / want_lr[s];
    EXPECT_LE(lr_rel, 8 * kU) << "step " << step << ": lr " << lr << " vs reference " << want_lr[s];
    worst_lr_rel = std::max(worst_lr_rel, lr_rel);

    const float* xs = x.data() + s * B * dims[0];
    const int32_t* ys = y.data() + s * B;
    const Scales sc = double_pass(dims, Wb, bb, xs, ys, c.class_weights, B);
    ties += sc.ties;
    const float loss = head.train_step(xs, ys, B);
    EXPECT_EQ(head.step(), step + 1);
    const double loss_tol = sc.loss_tol;
    const double dloss = std::fabs((double)loss - want_loss[s]);
    EXPECT_LE(dloss, loss_tol) << "step " << step << ": loss " << loss << " vs " << want_loss[s];
    worst_loss_ratio = std::max(worst_loss_ratio, dloss / loss_tol);

    for (size_t l = 0; l < L; ++l)
      for (int t = 0; t < 2; ++t) {
        const int64_t n = t == 0 ? dims[l] * dims[l + 1] : dims[l + 1];
        const int64_t off = s * n;
        const float* g_ref = rgrad[l][t].data() + off;
        const float* g_our =
            (t == 0 ? A.kernel(HeadSection::Grads, (int)l) : A.bias(HeadSection::Grads, (int)l))
                .data();
        const float* p0 = t == 0 ? Wb[l] : bb[l];
        const float* ms_b = s == 0 ? ms0[l][t].data() : rms[l][t].data() + off - n;
        const float* mom_b = s == 0 ? mom0[l][t].data() : rmom[l][t].data() + off - n;
        const float* want[3] = {rp[l][t].data() + off, rms[l][t].data() + off,
                                rmom[l][t].data() + off};
        Tensor gp =
            t == 0 ? A.kernel(HeadSection::Params, (int)l) : A.bias(HeadSection::Params, (int)l);
        Tensor gm = t == 0 ? A.kernel(HeadSection::Ms, (int)l) : A.bias(HeadSection::Ms, (int)l);
        Tensor gv = t == 0 ? A.kernel(HeadSection::Mom, (int)l) : A.bias(HeadSection::Mom, (int)l);
        const float* got[3] = {gp.data(), gm.data(), gv.data()};
        const auto& S = sc.s[t][l];
        const auto& F = sc.f[t][l];
        const auto& E = sc.e[t][l];
        const auto& G64 = sc.g[t][l];
        // Gradient tolerance and its check (ours vs reference); both against double, printed.
        std::vector<double> tau(n);
        for (int64_t i = 0; i < n; ++i) {
          tau[i] = kKappa * S[i] + E[i] + F[i] + 1e-30;
          worst_our_grad = std::max(worst_our_grad, std::fabs(g_our[i] - G64[i]) / tau[i]);
          worst_ref_grad = std::max(worst_ref_grad, std::fabs(g_ref[i] - G64[i]) / tau[i]);
        }
        c_grad.add(g_our, g_ref, tau.data(), n);
        // The formula on the reference's gradient (and at g_ref +- tau for the bracket).
        auto update = [&](const std::vector<float>& g, std::vector<float>& p,
                          std::vector<float>& ms, std::vector<float>& mo) {
          p.assign(p0, p0 + n), ms.assign(ms_b, ms_b + n), mo.assign(mom_b, mom_b + n);
          int64_t st = step;
          rmsprop_update_cpu(p.data(), g.data(), ms.data(), mo.data(), n, o, &st);
        };
        std::vector<float> gr(g_ref, g_ref + n), ghi(n), glo(n), gabs_hi(n), gabs_lo(n);
        for (int64_t i = 0; i < n; ++i) {
          ghi[i] = (float)(g_ref[i] + tau[i]), glo[i] = (float)(g_ref[i] - tau[i]);
          gabs_hi[i] = std::max(std::fabs(ghi[i]), std::fabs(glo[i]));
          gabs_lo[i] =
              glo[i] <= 0 && ghi[i] >= 0 ? 0.f : std::min(std::fabs(ghi[i]), std::fabs(glo[i]));
        }
        std::vector<float> fp, fms, fmo, hp, hms, hmo, lp, lms, lmo, ap, ams, amo, bp, bms, bmo;
        update(gr, fp, fms, fmo);
        update(ghi, hp, hms, hmo);
        update(glo, lp, lms, lmo);
        update(gabs_hi, ap, ams, amo);
        update(gabs_lo, bp, bms, bmo);
        const double lrf = v.formula == kTF1 ? 1.0 : lr;  // params change = lrf * mom
        // |params change| <= lr/sqrt(1-rho)/(1-m): ms' >= (1-rho) g^2 in both formulas.
        const double bound = lr / std::sqrt(1.0 - o.rho) / (1.0 - m);
        std::vector<double> tol_f[3], tol_s[3];
        for (auto& q : tol_f) q.resize(n);
        for (auto& q : tol_s) q.resize(n);
        for (int64_t i = 0; i < n; ++i) {
          // Reference's own update size, recovered from its states (double).
          const double mom_prev = cmp_mom ? mom_b[i] : 0.0;
          const double upd = cmp_mom ? std::fabs(want[2][i] - m * mom_prev)
                                     : std::fabs(((double)want[0][i] - p0[i]) / lrf);
          const double tmom = 8 * kU * (m * std::fabs(mom_prev) + upd) + lr_rel * upd + 1e-38;
          tol_f[2][i] = tmom;
          tol_f[1][i] = 8 * kU * std::fabs(want[1][i]) + 1e-38;
          tol_f[0][i] = 4 * kU * std::fabs(want[0][i]) + lrf * tmom +
                        2 * kU * lrf * (upd + m * std::fabs(mom_prev));
          const double br[3] = {
              std::max(std::fabs((double)hp[i] - fp[i]), std::fabs((double)lp[i] - fp[i])),
              std::max(std::fabs((double)ams[i] - fms[i]), std::fabs((double)bms[i] - fms[i])),
              std::max(std::fabs((double)hmo[i] - fmo[i]), std::fabs((double)lmo[i] - fmo[i]))};
          for (int q = 0; q < 3; ++q) tol_s[q][i] = tol_f[q][i] + br[q];
          ++total;
          if (br[0] > 1e-2 * bound) {
            ++opened;
          } else {
            worst_well = std::max(worst_well, std::fabs((double)got[0][i] - want[0][i]) / bound);
          }
        }
        const float* fres[3] = {fp.data(), fms.data(), fmo.data()};
        for (int q = 0; q < 3; ++q) {
          if (q == 2 && !cmp_mom) continue;
          Check a, b;
          a.add(fres[q], want[q], tol_f[q].data(), n);
          b.add(got[q], want[q], tol_s[q].data(), n);
          c_formula[q].add(fres[q], want[q], tol_f[q].data(), n);
          c_state[q].add(got[q], want[q], tol_s[q].data(), n);
          static const char* qn[3] = {"params", "ms", "mom"};
          EXPECT_EQ(a.bad, 0) << "step " << step << " dense_" << l + 1 << " " << names[t] << " "
                              << qn[q] << " formula: " << a.str() << "; worst got " << a.got
                              << " want " << a.want;
          EXPECT_EQ(b.bad, 0) << "step " << step << " dense_" << l + 1 << " " << names[t] << " "
                              << qn[q] << " whole step: " << b.str() << "; worst got " << b.got
                              << " want " << b.want;
        }
      }
    if (verbose)
      std::printf("    step %3lld lr %.6g loss %.7f ref %.7f |d|/tol %.3g ties %lld fwd err %.3g\n",
                  (long long)step, lr, loss, want_loss[s], dloss / loss_tol, (long long)sc.ties,
                  sc.our_fwd_err);
  }
  EXPECT_EQ(c_grad.bad, 0) << "gradients: " << c_grad.str();
  std::printf("  %s/%s %s (%lld steps from step %lld): lr max rel %.3g; loss worst |d|/tol %.3g\n",
              v.file, v.variant, v.kase, (long long)T, (long long)step0, worst_lr_rel,
              worst_loss_ratio);
  std::printf(
      "  gradient vs reference: %s; vs the double-precision gradient, worst |d|/tol: ours %.3g, "
      "reference %.3g; ReLU ties %lld\n",
      c_grad.str().c_str(), worst_our_grad, worst_ref_grad, (long long)ties);
  const char* qn[3] = {"params", "ms", "mom"};
  for (int q = 0; q < 3; ++q) {
    if (q == 2 && !cmp_mom) continue;
    std::printf("  %-6s formula (reference gradient): %s\n  %-6s whole step (our gradient): %s\n",
                qn[q], c_formula[q].str().c_str(), qn[q], c_state[q].str().c_str());
  }
  std::printf(
      "  params: %lld of %lld elements have a bracket > 1%% of the step bound (ill-conditioned);"
      " elsewhere max |d| = %.3g step bounds\n",
      (long long)opened, (long long)total, worst_well);
}

INSTANTIATE_TEST_SUITE_P(Runs, HeadTraining,
                         ::testing::Range(0, (int)(sizeof kRuns / sizeof kRuns[0])),
                         [](const ::testing::TestParamInfo<int>& i) {
                           const RefRun& r = kRuns[i.param];
                           return std::string(r.file == kTfFile ? "tf_" : "torchref_") + r.variant +
                                  "_" + r.kase;
                         });
