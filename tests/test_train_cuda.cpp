// tests/test_train_cuda.cpp: tools/train --device. Train.CudaRunEqualsCpuRun runs the tool with
// --device cuda and --device cpu on one synthetic cache and compares what they write; it skips
// without a GPU (fails under ENGINE_REQUIRE_GPU=1). Train.DeviceFlag runs on every machine: the
// flag's errors (cuda without a GPU: one line, exit 2) and that the device may change on resume.
//
// Why teacher-forced: two free float32 trajectories drift apart through RMSProp's g/sqrt(ms)
// (tests/test_head.cpp says how), so each comparison starts both devices from ONE saved state
// (the tool resumes a checkpoint on either device) and compares the single step that follows:
//  - the CPU run must equal HeadCpu's own step on the batch of (seed, step) bit for bit, which
//    proves the test has the tool's batch, gradient g and state;
//  - the GPU run: loss within 1e-5 |loss| + 1e-6 and the gradient within
//    dg_i = 1e-3 max|g| + 1e-3 |g_i| (the bounds of Cuda.HeadCudaStepsMatchHeadCpuTeacherForced,
//    which derives them). TF1 RMSProp with momentum 0 gives mom = u(g) = lr g / sqrt(S),
//    S = rho ms + (1-rho) g^2 + eps, and du/dg = lr (rho ms + eps) / S^1.5 <= lr / sqrt(rho ms +
//    eps): so |d mom_i| <= lr dg_i / sqrt(rho ms_i + eps), params the same plus their rounding,
//    and |d ms_i| <= (1-rho)(2 |g_i| dg_i + dg_i^2), each plus a few float ulps of rounding;
//  - the validation metrics a GPU run records are those of its own head: the test evaluates the
//    GPU's checkpoint on the CPU and allows what the predict bound |dp| <= 1e-4 + 1e-3 p can move
//    (loss: the log of it; accuracy: rows whose two probabilities lie within it; AUC: pairs whose
//    scores do);
//  - the graph replay (every GPU step after the first of a process) equals the eager first step
//    bit for bit: the same kernels on the same state, so a run of two GPU steps must equal one
//    GPU step, a checkpoint, and a second process's (eager) step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/metrics.h"
#include "engine/split.h"
#include "models/head.h"
#include "models/head_trainer.h"
#include "test_util.h"
#include "train_cache.h"

namespace fs = std::filesystem;
using namespace engine;
using engine::test::TempDir;
using engine::test::ToolRun;

namespace {

constexpr int64_t kBatch = 128;  // tools/train's default, the batch the bounds were derived at

ToolRun train(const TempDir& tmp, const std::string& out, const std::string& flags) {
  return engine::test::run_tool(
      "train", "--cache " + (tmp / "c.h5") + " --out " + (tmp / out) + " --quiet " + flags, tmp);
}

void copy_run(const TempDir& tmp, const std::string& from, const std::string& to) {
  fs::copy(tmp / from, tmp / to, fs::copy_options::recursive);
}

// The cache and split as tools/train makes them (default 10% / 10%, no groups in this cache).
struct RunData {
  CacheContents cache;
  SplitIndices split;
  explicit RunData(const std::string& path) : cache(read_cache(path)) {
    const auto subsets =
        split_dataset(cache.paths, {}, cache.labels, cache.class_names, 10.0, 10.0);
    split = split_indices(subsets, cache.labels, static_cast<int>(cache.class_names.size()));
  }
  void rows(const std::vector<int64_t>& idx, std::vector<float>& x, std::vector<int32_t>& y) const {
    x.resize(idx.size() * kCacheFeatureSize);
    y.resize(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      std::copy_n(cache.features.begin() + idx[i] * kCacheFeatureSize, kCacheFeatureSize,
                  x.begin() + static_cast<long>(i * kCacheFeatureSize));
      y[i] = cache.labels[static_cast<size_t>(idx[i])];
    }
  }
};

HeadState checkpoint(const TempDir& tmp, const std::string& run) {
  return head_load_state(tmp / (run + "/checkpoint.h5"));
}

CurvePoint last_record(const TempDir& tmp, const std::string& run, int64_t step) {
  const auto curve = read_curve_csv(tmp / (run + "/metrics.csv"), step);
  EXPECT_FALSE(curve.empty()) << run;
  return curve.empty() ? CurvePoint{} : curve.back();
}

// Counts the elements of `got` outside want +- bound(i); names the worst one.
template <typename Bound>
::testing::AssertionResult within(const std::vector<float>& got, const std::vector<float>& want,
                                  Bound bound, const std::string& what) {
  int64_t bad = 0, worst = -1;
  double worst_ratio = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i])), b = bound(i);
    if (!(d <= b)) ++bad;
    const double r = b > 0 ? d / b : (d > 0 ? INFINITY : 0);
    if (!(r <= worst_ratio)) worst_ratio = r, worst = static_cast<int64_t>(i);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << want.size() << " outside the bound; worst [" << worst
         << "] gpu " << got[worst] << " cpu " << want[worst] << " bound " << bound(worst);
}

// Bit-for-bit equality of two float vectors; names the first difference (gtest would print all).
::testing::AssertionResult same(const std::vector<float>& a, const std::vector<float>& b,
                                const std::string& what) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure()
             << what << ": first difference at [" << i << "]: " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

// One step from `from` on each device (runs gpu_run and cpu_run, already at from.step + 1).
void expect_one_step_equal(const TempDir& tmp, const RunData& d, const HeadState& from,
                           const std::string& gpu_run, const std::string& cpu_run) {
  const HeadConfig& c = from.config;
  ASSERT_EQ(c.optimizer.formula, RmsPropFormula::TF1);
  ASSERT_EQ(c.optimizer.momentum, 0.0);
  const std::string at = " (step " + std::to_string(from.step) + ")";
  HeadCpu h(from);
  std::vector<float> x;
  std::vector<int32_t> y;
  d.rows(batch_indices(c.seed, from.step, kBatch, Sampling::Uniform, d.split), x, y);
  const float loss = h.train_step(x.data(), y.data(), kBatch);
  const HeadState g = checkpoint(tmp, gpu_run), k = checkpoint(tmp, cpu_run);
  ASSERT_EQ(k.step, from.step + 1);
  ASSERT_EQ(g.step, from.step + 1);
  const int64_t P = h.params().section_size();
  auto sec = [&](HeadSection s) {
    const float* a = h.params().section(s);
    return std::vector<float>(a, a + P);
  };
  const std::vector<float> p = sec(HeadSection::Params), ms = sec(HeadSection::Ms),
                           mom = sec(HeadSection::Mom), grad = sec(HeadSection::Grads);
  // The CPU tool is HeadCpu's step: the batch and gradient here are the tool's.
  EXPECT_TRUE(same(k.params, p, "params, cpu run vs HeadCpu" + at));
  EXPECT_TRUE(same(k.ms, ms, "ms, cpu run vs HeadCpu" + at));
  EXPECT_TRUE(same(k.mom, mom, "mom, cpu run vs HeadCpu" + at));
  const CurvePoint rg = last_record(tmp, gpu_run, g.step), rk = last_record(tmp, cpu_run, k.step);
  ASSERT_EQ(rg.step, g.step);
  ASSERT_EQ(rk.step, k.step);
  EXPECT_EQ(rk.train_loss, double(loss)) << at;
  EXPECT_NEAR(rg.train_loss, loss, 1e-5 * std::fabs(loss) + 1e-6) << at;

  double gmax = 0;
  for (float v : grad) gmax = std::max(gmax, double(std::fabs(v)));
  const double lr = rmsprop_learning_rate(c.optimizer, from.step), rho = c.optimizer.rho,
               eps = c.optimizer.eps, ulp = std::ldexp(1.0, -23);
  auto dg = [&](size_t i) { return 1e-3 * gmax + 1e-3 * std::fabs(grad[i]); };
  auto dmom = [&](size_t i) {
    return lr * dg(i) / std::sqrt(rho * from.ms[i] + eps) +
           4 * ulp * (std::fabs(g.mom[i]) + std::fabs(k.mom[i]));
  };
  EXPECT_TRUE(within(g.mom, k.mom, dmom, "mom" + at));
  EXPECT_TRUE(within(
      g.params, k.params,
      [&](size_t i) { return dmom(i) + ulp * (std::fabs(g.params[i]) + std::fabs(k.params[i])); },
      "params" + at));
  EXPECT_TRUE(within(
      g.ms, k.ms,
      [&](size_t i) {
        return (1 - rho) * (2 * std::fabs(grad[i]) * dg(i) + dg(i) * dg(i)) +
               2 * ulp * (std::fabs(g.ms[i]) + std::fabs(k.ms[i]));
      },
      "ms" + at));
}

// The validation metrics the run recorded at its checkpoint's step against the CPU evaluation of
// that checkpoint, within what the GPU/CPU predict bound allows (see the file comment).
void expect_records_of_its_head(const TempDir& tmp, const RunData& d, const std::string& run) {
  const HeadState st = checkpoint(tmp, run);
  HeadCpu h(st);
  const auto& rows = d.split.validation;
  ASSERT_FALSE(rows.empty());
  std::vector<float> x, probs(rows.size() * 2);
  std::vector<int32_t> y;
  d.rows(rows, x, y);
  h.predict(x.data(), static_cast<int64_t>(rows.size()), probs.data());
  const ClassificationMetrics m = evaluate_classifier(probs, y, 2);
  const CurvePoint r = last_record(tmp, run, st.step);
  ASSERT_EQ(r.step, st.step);
  auto dp = [](double p) { return 1e-4 + 1e-3 * p; };
  const size_t n = rows.size();
  double loss_bound = 0;
  int64_t flips = 0, n_class[2] = {0, 0};
  for (size_t i = 0; i < n; ++i) {
    const double py = probs[2 * i + static_cast<size_t>(y[i])];
    loss_bound += std::log(py) - std::log(std::max(py - dp(py), 1e-12));
    const double p0 = probs[2 * i], p1 = probs[2 * i + 1];
    if (std::fabs(p1 - p0) <= dp(p0) + dp(p1)) ++flips;
    ++n_class[y[i]];
  }
  int64_t close_pairs = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      if (y[i] == 1 && y[j] == 0) {
        const double a = probs[2 * i + 1], b = probs[2 * j + 1];
        if (std::fabs(a - b) <= dp(a) + dp(b)) ++close_pairs;
      }
  const double tiny = 1e-12;
  EXPECT_NEAR(r.val_loss, m.loss, loss_bound / double(n) + 1e-7) << run;
  EXPECT_NEAR(r.val_accuracy, m.accuracy, double(flips) / double(n) + tiny) << run;
  EXPECT_NEAR(r.val_balanced_accuracy, m.balanced_accuracy,
              double(flips) / double(std::max<int64_t>(1, std::min(n_class[0], n_class[1]))) + tiny)
      << run;
  EXPECT_NEAR(r.val_auc, m.auc,
              double(close_pairs) / double(std::max<int64_t>(1, n_class[0] * n_class[1])) + tiny)
      << run;
}

}  // namespace

TEST(Train, CudaRunEqualsCpuRun) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  TempDir tmp("train_cuda");
  engine::test::write_synthetic_cache(tmp / "c.h5", 400, 80, 0.2, std::string(64, 'c'));
  const RunData d(tmp / "c.h5");
  // The default head (2048-512-512-2, dropout 0.5, TF1 RMSProp, batch 128), class weights on.
  const std::string common = "--class-weights balanced --eval-every 1 ";
  auto ok = [](const ToolRun& r, const std::string& what) {
    EXPECT_EQ(r.status, 0) << what << ": " << r.err;
    return r.status == 0;
  };

  // From the seed's state (step 0): a fresh run on each device.
  ToolRun g0 = train(tmp, "g0", common + "--steps 1 --device cuda");
  ASSERT_TRUE(ok(g0, "g0"));
  EXPECT_NE(g0.out.find("device: cuda ("), std::string::npos) << g0.out;
  ASSERT_TRUE(ok(train(tmp, "c0", common + "--steps 1 --device cpu"), "c0"));
  const HeadConfig cfg = checkpoint(tmp, "c0").config;
  expect_one_step_equal(tmp, d, head_initial_state(cfg), "g0", "c0");
  expect_records_of_its_head(tmp, d, "g0");

  // From a trained state (ms < 1): 3 CPU steps, then one step on each device (a CPU checkpoint
  // resumed on the GPU: the device is not a fixed setting of a run).
  ASSERT_TRUE(ok(train(tmp, "base", common + "--steps 3 --device cpu"), "base"));
  copy_run(tmp, "base", "g3");
  copy_run(tmp, "base", "c3");
  copy_run(tmp, "base", "x");
  ToolRun g3 = train(tmp, "g3", "--steps 4 --device cuda");
  ASSERT_TRUE(ok(g3, "g3"));
  EXPECT_NE(g3.out.find("resuming from"), std::string::npos) << g3.out;
  ASSERT_TRUE(ok(train(tmp, "c3", "--steps 4 --device cpu"), "c3"));
  expect_one_step_equal(tmp, d, checkpoint(tmp, "base"), "g3", "c3");
  expect_records_of_its_head(tmp, d, "g3");

  // Graph replay == eager: x takes steps 4 (eager) and 5 (graph replay) in one process; g3 takes
  // step 5 eagerly in a new process from its own step-4 checkpoint (which x's step 4 equals).
  ASSERT_TRUE(ok(train(tmp, "x", "--steps 5 --device cuda"), "x"));
  ASSERT_TRUE(ok(train(tmp, "g3", "--steps 5 --device cuda"), "g3 to 5"));
  const HeadState xs = checkpoint(tmp, "x"), gs = checkpoint(tmp, "g3");
  EXPECT_EQ(xs.step, 5);
  EXPECT_TRUE(same(xs.params, gs.params, "params, graph replay vs eager step"));
  EXPECT_TRUE(same(xs.ms, gs.ms, "ms, graph replay vs eager step"));
  EXPECT_TRUE(same(xs.mom, gs.mom, "mom, graph replay vs eager step"));
  EXPECT_EQ(engine::test::slurp(tmp / "x/metrics.csv"),
            engine::test::slurp(tmp / "g3/metrics.csv"));
  expect_records_of_its_head(tmp, d, "x");

  // A GPU checkpoint resumes on the CPU, and the run finishes with every output.
  ASSERT_TRUE(ok(train(tmp, "g0", "--steps 2 --device cpu"), "g0 on cpu"));
  EXPECT_EQ(checkpoint(tmp, "g0").step, 2);
  for (const char* f : {"best.h5", "head_keras.h5", "metrics.json", "report.html"})
    EXPECT_TRUE(fs::exists(tmp / (std::string("g0/") + f))) << f;
}

TEST(Train, DeviceFlagErrorsAndTheDeviceMayChangeOnResume) {
  TempDir tmp("train_device");
  engine::test::write_synthetic_cache(tmp / "c.h5", 200, 40, 0.2, std::string(64, 'd'));
  const std::string small = "--hidden 16 --batch 8 --eval-every 2 ";
  const bool gpu = cuda_availability().devices > 0;
  ToolRun r = train(tmp, "a", small + "--steps 2 --device cuda");
  if (!gpu) {
    // One line naming the flag and the reason, exit 2, nothing trained.
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("not verified"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "a/checkpoint.h5"));
  } else {
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("device: cuda"), std::string::npos) << r.out;
  }
  EXPECT_EQ(train(tmp, "a", small + "--steps 2 --device tpu").status, 2);
  // auto: the GPU when usable, else the CPU.
  ToolRun au = train(tmp, "b", small + "--steps 2 --device auto --restart");
  ASSERT_EQ(au.status, 0) << au.err;
  EXPECT_NE(au.out.find(gpu ? "device: cuda" : "device: cpu"), std::string::npos) << au.out;
  // A resume with --device given (another value than the run started with, where it can be) is
  // accepted: the device is not one of the run's fixed settings.
  ToolRun re = train(tmp, "b", "--steps 4 --device cpu");
  ASSERT_EQ(re.status, 0) << re.err;
  EXPECT_NE(re.out.find("resuming from"), std::string::npos) << re.out;
  EXPECT_NE(re.out.find("device: cpu"), std::string::npos) << re.out;
  EXPECT_EQ(re.out.find("changed: --device"), std::string::npos) << re.out;
  EXPECT_EQ(checkpoint(tmp, "b").step, 4);
}
