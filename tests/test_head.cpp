// tests/test_head.cpp: the classifier head (models/head.h) as a whole: finite-difference gradient
// checks in double of the whole head (p = 0 and p = 0.5 with the fixed mask), Glorot init and the
// arena layout, bitwise determinism and checkpoint/resume, predict, config errors; then HeadCuda
// against HeadCpu teacher-forced (skipped, with the reason printed, when no GPU is present). The
// head's kernels (dropout, softmax-xent, RMSProp, dense backward) are tested per device in
// tests/test_kernels_head.cpp.
// Run: ctest -R test_head  (or build/tests/test_head directly; no reference files needed).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "kernels/dropout.h"
#include "kernels/rmsprop.h"
#include "models/head.h"
#include "test_util.h"
#include "tests/kernel_cases.h"

using namespace engine;
using engine::kernel_cases::labels;
using engine::kernel_cases::uniform;
using engine::test::tensors_close;

namespace {
std::string tmp_path(const std::string& name) { return ::testing::TempDir() + "test_head_" + name; }
}  // namespace

// ---------------------------------------------------------------------------------------------
// Finite-difference gradient check of the whole head (double forward, central differences,
// h = 1e-6; analytic gradients from the float kernels). Tolerance atol 1e-5 + rtol 1e-3: float32
// kernels on O(1) values are accurate to ~1e-6, FD in double to ~1e-9.
// ---------------------------------------------------------------------------------------------
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
          for (int64_t i = 0; i < ly.in; ++i)
            z += in[r * ly.in + i] * P[ly.kernel_off + i * ly.out + o];
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
    for (int64_t i = 0; i < k.numel(); ++i)
      mx = std::max(mx, std::fabs((double)k.data()[i])), ss += k.data()[i] * (double)k.data()[i];
    EXPECT_LE(mx, lim);
    EXPECT_GT(mx, 0.9 * lim);
    // Var of U(-lim, lim) = lim^2/3.
    EXPECT_NEAR(ss / k.numel(), lim * lim / 3, 0.1 * lim * lim / 3) << "layer " << l;
    Tensor b = h.params().bias(HeadSection::Params, l);
    EXPECT_EQ(test::max_abs(b), 0.0);
  }
  EXPECT_EQ(h.params().section(HeadSection::Ms)[0], 1.f);  // TF1 ms starts at one
  HeadCpu h2(c);
  EXPECT_EQ(0,
            std::memcmp(h.params().data(), h2.params().data(), sizeof(float) * h.params().total()));
  c.seed = 1235;
  HeadCpu h3(c);
  EXPECT_NE(0, std::memcmp(h.params().data(), h3.params().data(),
                           sizeof(float) * h.params().section_size()));
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
  EXPECT_EQ(0,
            std::memcmp(a.params().data(), b.params().data(), sizeof(float) * a.params().total()))
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
  EXPECT_EQ(0, std::memcmp(a.params().data(), r.params().data(),
                           sizeof(float) * a.params().section_size()))
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
// HeadCuda vs HeadCpu. Skipped without a GPU.
// ---------------------------------------------------------------------------------------------
#ifdef ENGINE_HAVE_CUDA
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
//           Cuda/RmsPropKernel.MatchesOracle), so no conditioning enters.
TEST(Cuda, HeadCudaStepsMatchHeadCpuTeacherForced) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
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

// The graph replay (every train_step after the first at a batch size) against eager steps: head
// `e` re-imposes its own state before every step (set_state drops the graph, so each step runs
// eagerly), head `a` replays from step 2 on. Same kernels on the same state: bit for bit. Also
// the batch limit: max_batch is a constructor argument (tools/train passes its --batch).
TEST(Cuda, HeadCudaGraphReplayEqualsEagerStepsAndMaxBatchIsChecked) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  const HeadConfig c = full_config();
  Batches B(6, c.input);
  HeadCuda a(c), e(c);
  HeadParams ha(c), he(c);
  const int64_t P = ha.section_size();
  for (int s = 0; s < 6; ++s) {
    e.copy_arena_to(he);
    HeadState st;
    st.config = c;
    st.step = e.step();
    st.params.assign(he.section(HeadSection::Params), he.section(HeadSection::Params) + P);
    st.ms.assign(he.section(HeadSection::Ms), he.section(HeadSection::Ms) + P);
    st.mom.assign(he.section(HeadSection::Mom), he.section(HeadSection::Mom) + P);
    e.set_state(st);
    const float la = a.train_step(B.x[s].data(), B.y[s].data(), B.n);
    const float le = e.train_step(B.x[s].data(), B.y[s].data(), B.n);
    const std::string at = ", step " + std::to_string(s);
    EXPECT_EQ(std::memcmp(&la, &le, sizeof la), 0) << la << " vs " << le << at;
    EXPECT_EQ(a.step(), s + 1);
    EXPECT_EQ(e.step(), s + 1);
    a.copy_arena_to(ha);
    e.copy_arena_to(he);
    EXPECT_CLOSE((ha.data(), he.data(), ha.total(), 0, 0, "arena, replay vs eager" + at));
  }
  EXPECT_THROW(a.train_step(B.x[0].data(), B.y[0].data(), HeadCuda::kDefaultMaxBatch + 1), Error);
  HeadCuda big(c, 2 * B.n);
  std::vector<float> x2(B.x[0]);
  x2.insert(x2.end(), B.x[1].begin(), B.x[1].end());
  std::vector<int32_t> y2(B.y[0]);
  y2.insert(y2.end(), B.y[1].begin(), B.y[1].end());
  EXPECT_TRUE(std::isfinite(big.train_step(x2.data(), y2.data(), 2 * B.n)));
  EXPECT_EQ(big.max_batch(), 2 * B.n);
}
#else
TEST(Cuda, NotBuilt) { GTEST_SKIP() << "built without CUDA (ENGINE_HAVE_CUDA undefined)"; }
#endif
