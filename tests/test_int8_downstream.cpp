// tests/test_int8_downstream.cpp: the downstream effect of int8 features (issue 12): the demo-like
// data set (tools/make_demo_data: 600x450 JPEGs of benign and melanoma-like lesions) is extracted
// in fp32 and in int8 (tools/extract, the seeded random-layout Inception weights of the reference
// build), the head is trained on each cache with the same seed and settings (tools/train), and
// the int8 head's test AUC must lie inside the fp32 head's 95% confidence interval (DeLong's
// variance, computed here from the head's test-split probabilities). Both AUCs are printed.
// 200 images (half melanoma-like), 40% of them the test split (81 images), so the interval is
// narrow enough to exclude chance: random Inception weights give weak features (fp32 AUC ~0.7).
// About 1.5 minutes on 2 busy cores; skips on a CPU without int8 instructions.
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <map>

#include "engine/bottleneck_cache.h"
#include "engine/dataset.h"
#include "engine/metrics.h"
#include "models/head_keras.h"
#include "models/inception_v3_lowp.h"
#include "test_util.h"

using namespace engine;
using engine::test::reference_file;
using engine::test::TempDir;
using engine::test::ToolRun;

namespace {

ToolRun run(const std::string& tool, const std::string& args, const TempDir& tmp) {
  return engine::test::run_tool(tool, args, tmp, {}, SIGKILL);
}

struct AucCi {
  double auc, lo, hi;
  size_t positives, negatives;
};

// DeLong et al. (1988): AUC = mean of the placement values, Var = S10/m + S01/n from their sample
// variances; the 95% interval is AUC +- 1.96 sd (clipped to [0, 1]).
AucCi delong(const std::vector<double>& scores, const std::vector<int>& positive) {
  std::vector<double> x, y;  // positives, negatives
  for (size_t i = 0; i < scores.size(); ++i) (positive[i] ? x : y).push_back(scores[i]);
  const size_t m = x.size(), n = y.size();
  if (m < 2 || n < 2) fail("delong: needs >= 2 of each class, got ", m, " and ", n);
  std::vector<double> v10(m, 0.0), v01(n, 0.0);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double psi = x[i] > y[j] ? 1.0 : x[i] == y[j] ? 0.5 : 0.0;
      v10[i] += psi / double(n);
      v01[j] += psi / double(m);
    }
  double auc = 0;
  for (double v : v10) auc += v / double(m);
  auto var = [&](const std::vector<double>& v) {
    double s = 0;
    for (double a : v) s += (a - auc) * (a - auc);
    return s / double(v.size() - 1);
  };
  const double sd = std::sqrt(var(v10) / double(m) + var(v01) / double(n));
  return {auc, std::max(0.0, auc - 1.96 * sd), std::min(1.0, auc + 1.96 * sd), m, n};
}

// The trained head of `run_dir` on the test split of `cache` (split.csv), scored as P(melanoma).
AucCi test_auc(const std::string& cache, const std::string& run_dir) {
  const CacheContents c = read_cache(cache);
  std::map<std::string, size_t> row;
  for (size_t i = 0; i < c.size(); ++i) row[c.paths[i]] = i;
  const KerasHead kh = read_keras_head(run_dir + "/head_keras.h5");
  EXPECT_EQ(kh.info.feature_precision, c.settings.precision);
  EXPECT_EQ(kh.info.feature_calibration, c.settings.calibration);
  HeadCpu head = kh.to_cpu();
  const auto split = read_csv(run_dir + "/split.csv");  // path,label,group,subset
  std::vector<double> scores;
  std::vector<int> positive;
  std::vector<float> probs(2);
  for (size_t i = 1; i < split.size(); ++i) {
    if (split[i].size() != 4 || split[i][3] != "test") continue;
    const size_t r = row.at(split[i][0]);
    head.predict(&c.features[r * kCacheFeatureSize], 1, probs.data());
    scores.push_back(probs[1]);
    positive.push_back(c.labels[r] == 1);
  }
  const AucCi a = delong(scores, positive);
  EXPECT_NEAR(a.auc, roc_auc(scores, positive), 1e-12);  // the placement mean is the AUC
  return a;
}

}  // namespace

TEST(Int8Downstream, HeadOnInt8FeaturesReachesTheFp32AucWithinItsInterval) {
  if (!cpu_precision_unavailable(CpuPrecision::INT8).empty())
    GTEST_SKIP() << cpu_precision_unavailable(CpuPrecision::INT8);
  TempDir tmp;
  ToolRun d = run("make_demo_data",
                  "--out " + (tmp / "demo") + " --count 200 --melanoma-fraction 0.5 --seed 1", tmp);
  ASSERT_EQ(d.status, 0) << d.err;
  const std::string w = reference_file("inception_v3_1based.h5");
  std::map<std::string, AucCi> auc;
  for (const char* p : {"fp32", "int8"}) {
    const std::string cache = tmp / (std::string(p) + ".h5"), out = tmp / (std::string("run_") + p);
    ToolRun e = run("extract",
                    "--images " + (tmp / "demo/images") + " --weights " + w + " --out " + cache +
                        " --precision " + p + " --batch 8 --quiet",
                    tmp);
    ASSERT_EQ(e.status, 0) << p << ": " << e.err;
    ASSERT_EQ(read_cache(cache).settings.precision, p);
    ToolRun t = run("train",
                    "--cache " + cache + " --out " + out +
                        " --steps 600 --eval-every 100 --learning-rate 1e-4 --hidden 64 "
                        "--class-weights balanced --test-percent 40 --seed 7 --quiet",
                    tmp);
    ASSERT_EQ(t.status, 0) << p << ": " << t.err;
    auc[p] = test_auc(cache, out);
    std::printf("  %s features: test AUC %.4f, 95%% CI [%.4f, %.4f] (%zu melanoma, %zu benign)\n",
                p, auc[p].auc, auc[p].lo, auc[p].hi, auc[p].positives, auc[p].negatives);
  }
  // The fp32 head learned something (else any AUC would sit in a chance-level interval).
  EXPECT_GT(auc["fp32"].lo, 0.5) << "the fp32 head's interval includes chance";
  EXPECT_GE(auc["int8"].auc, auc["fp32"].lo);
  EXPECT_LE(auc["int8"].auc, auc["fp32"].hi);
}
