// tests/test_head_trainer.cpp: the head's training loop as a library (models/head_trainer.h), on
// an in-memory synthetic cache: a run stopped and resumed from its checkpoint ends bit-identical
// to an unbroken one (params, best.h5 and both record files); the observer sees every step and
// record; best.h5 is the record with the best selected value; batches are a function of
// (seed, step) and balanced sampling draws the classes evenly; the record files have their exact
// text and read back bit for bit. The tool around it: tests/test_train.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/error.h"
#include "models/head_trainer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

using engine::test::slurp;
using engine::test::TempDir;

// n rows, every 5th melanoma (label 1) with its first 64 features shifted by 0.3; rows i % 7 == 0
// are validation, i % 7 == 1 test, the rest train.
struct Data {
  CacheContents cache;
  SplitIndices split;
  explicit Data(int n, bool validation = true) {
    cache.class_names = {"benign", "melanoma"};
    std::mt19937_64 rng(3);
    std::normal_distribution<float> g(0.f, 1.f);
    std::vector<Subset> subsets;
    for (int i = 0; i < n; ++i) {
      const int32_t y = i % 5 == 0 ? 1 : 0;
      cache.paths.push_back("x/ISIC_" + std::to_string(i) + ".jpg");
      cache.labels.push_back(y);
      for (int d = 0; d < kCacheFeatureSize; ++d)
        cache.features.push_back(std::max(0.f, 0.5f + 0.3f * g(rng) + (y && d < 64 ? 0.3f : 0.f)));
      subsets.push_back(validation && i % 7 == 0 ? Subset::Validation
                        : i % 7 == 1             ? Subset::Test
                                                 : Subset::Train);
    }
    split = split_indices(subsets, cache.labels, 2);
  }
};

HeadTrainSettings small_settings(const std::string& out, int64_t steps) {
  HeadTrainSettings s;
  s.out = out;
  s.head.input = kCacheFeatureSize;
  s.head.hidden = {16, 8};
  s.head.classes = 2;
  s.head.seed = 11;
  s.head.optimizer.lr = 1e-3;
  s.steps = steps, s.batch = 16, s.eval_every = 10;
  return s;
}

std::vector<float> params_of(const std::string& path) { return head_load_state(path).params; }

}  // namespace

TEST(HeadTrainer, StoppedAndResumedEqualsUnbrokenBitForBit) {
  TempDir tmp;
  const Data d(300);
  std::vector<int64_t> steps_seen, records_seen;
  HeadTrainObserver obs;
  obs.on_step = [&](int64_t step, float loss) {
    steps_seen.push_back(step);
    EXPECT_TRUE(std::isfinite(loss));
  };
  obs.on_record = [&](const CurvePoint& p, bool) { records_seen.push_back(p.step); };
  {
    HeadTrainer a(small_settings(tmp / "a", 45), d.cache, d.split);
    EXPECT_EQ(a.step(), 0);
    a.run(obs);
    EXPECT_EQ(a.step(), 45);
  }
  std::vector<int64_t> want_steps(45);
  for (int i = 0; i < 45; ++i) want_steps[static_cast<size_t>(i)] = i + 1;
  EXPECT_EQ(steps_seen, want_steps);
  EXPECT_EQ(records_seen, (std::vector<int64_t>{10, 20, 30, 40, 45}));  // and the last step

  HeadTrainer(small_settings(tmp / "b", 20), d.cache, d.split).run();
  HeadTrainSettings resume = small_settings(tmp / "b", 45);
  resume.resume = true;
  HeadTrainer b(resume, d.cache, d.split);
  EXPECT_EQ(b.step(), 20);
  EXPECT_EQ(b.curve().size(), 2u);  // the records up to the checkpoint, read back
  steps_seen.clear(), records_seen.clear();
  b.run(obs);
  EXPECT_EQ(steps_seen.front(), 21);
  EXPECT_EQ(steps_seen.size(), 25u);
  EXPECT_EQ(records_seen, (std::vector<int64_t>{30, 40, 45}));

  EXPECT_EQ(params_of(tmp / "a/checkpoint.h5"), params_of(tmp / "b/checkpoint.h5"));
  EXPECT_EQ(params_of(tmp / "a/best.h5"), params_of(tmp / "b/best.h5"));
  EXPECT_EQ(slurp(tmp / "a/metrics.csv"), slurp(tmp / "b/metrics.csv"));
  EXPECT_EQ(slurp(tmp / "a/metrics.jsonl"), slurp(tmp / "b/metrics.jsonl"));
  // Durable commits leave no temporaries behind: exactly the four files of the run folder.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp / "b"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names,
            (std::vector<std::string>{"best.h5", "checkpoint.h5", "metrics.csv", "metrics.jsonl"}));

  // A checkpoint made with another head is refused, naming what to do.
  HeadTrainSettings other = resume;
  other.head.hidden = {16, 4};
  try {
    HeadTrainer bad(other, d.cache, d.split);
    FAIL() << "a checkpoint of another head was resumed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint does not match"), std::string::npos)
        << e.what();
  }
}

TEST(HeadTrainer, BestIsTheRecordWithTheBestSelectedValue) {
  TempDir tmp;
  const Data d(300);
  HeadTrainSettings s = small_settings(tmp / "run", 60);
  s.select = SelectMetric::Loss;
  std::vector<int64_t> best_flags;
  HeadTrainObserver obs;
  obs.on_record = [&](const CurvePoint& p, bool best) {
    if (best) best_flags.push_back(p.step);
  };
  HeadTrainer t(s, d.cache, d.split);
  t.run(obs);
  ASSERT_EQ(t.curve().size(), 6u);
  // The lowest validation loss (the first on ties) is best; the observer saw it flagged last.
  const auto it = std::min_element(
      t.curve().begin(), t.curve().end(),
      [](const CurvePoint& a, const CurvePoint& b) { return a.val_loss < b.val_loss; });
  EXPECT_EQ(t.best_step(), it->step);
  ASSERT_FALSE(best_flags.empty());
  EXPECT_EQ(best_flags.back(), it->step);
  EXPECT_EQ(best_flags.front(), 10);  // the first record is always best so far
  // final_head() is best.h5: its step and parameters.
  HeadCpu fin = t.final_head();
  EXPECT_EQ(fin.step(), it->step);
  EXPECT_EQ(fin.config().hidden, (std::vector<int64_t>{16, 8}));
  const HeadState best = head_load_state(t.best_path());
  EXPECT_TRUE(std::equal(best.params.begin(), best.params.end(),
                         fin.params().section(HeadSection::Params)));
  // Evaluated on the test rows it gives a full set of metrics.
  const ClassificationMetrics m = evaluate_head(fin, d.cache, d.split.test);
  EXPECT_EQ(m.n, static_cast<int64_t>(d.split.test.size()));

  // Without validation rows there is nothing to select on: every record is the newest, best
  // is the last step's head, and the validation columns are NaN.
  const Data nv(300, false);
  HeadTrainer last(small_settings(tmp / "nv", 25), nv.cache, nv.split);
  last.run();
  EXPECT_EQ(last.best_step(), 25);
  EXPECT_TRUE(std::isnan(last.curve().back().val_auc));
  EXPECT_EQ(params_of(last.best_path()), params_of(last.checkpoint_path()));
}

TEST(HeadTrainer, BatchesDependOnlyOnSeedAndStepAndBalancedSamplingEvensClasses) {
  const Data d(700);  // train: 500 rows, 1 in 5 melanoma
  const auto a = batch_indices(5, 17, 4000, Sampling::Uniform, d.split);
  EXPECT_EQ(a, batch_indices(5, 17, 4000, Sampling::Uniform, d.split));
  EXPECT_NE(a, batch_indices(5, 18, 4000, Sampling::Uniform, d.split));
  EXPECT_NE(a, batch_indices(6, 17, 4000, Sampling::Uniform, d.split));
  auto melanoma_share = [&](const std::vector<int64_t>& idx) {
    double m = 0;
    for (int64_t i : idx) {
      EXPECT_TRUE(std::binary_search(d.split.train.begin(), d.split.train.end(), i))
          << i << " is not a train row";
      m += d.cache.labels[static_cast<size_t>(i)];
    }
    return m / static_cast<double>(idx.size());
  };
  // Uniform draws follow the train set's share (100 of 500 = 0.2); balanced ones 1/2. With
  // 4000 draws the standard error is <= 0.008, so 0.04 is 5 sigma.
  const double train_share = static_cast<double>(d.split.train_by_class[1].size()) /
                             static_cast<double>(d.split.train.size());
  EXPECT_NEAR(melanoma_share(a), train_share, 0.04);
  EXPECT_NEAR(melanoma_share(batch_indices(5, 17, 4000, Sampling::Balanced, d.split)), 0.5, 0.04);
}

TEST(HeadTrainer, RecordFilesHaveTheirExactTextAndReadBackBitForBit) {
  TempDir tmp;
  const std::vector<CurvePoint> curve = {{50, 0.6931471805599453, 0.5, 0.75, 2.0 / 3.0, 0.8125},
                                         {100, 0.25, NAN, NAN, NAN, NAN}};
  const std::string csv = curve_csv(curve);
  EXPECT_EQ(csv,
            "step,train_loss,val_loss,val_accuracy,val_balanced_accuracy,val_auc\n"
            "50,0.6931471805599453,0.5,0.75,0.6666666666666666,0.8125\n"
            "100,0.25,,,,\n");
  // (The numbers are the shortest text that reads back the same double, as Python's repr.)
  EXPECT_EQ(curve_jsonl(curve),
            "{\"step\": 50, \"train_loss\": 0.6931471805599453, \"val_loss\": 0.5, "
            "\"val_accuracy\": 0.75, "
            "\"val_balanced_accuracy\": 0.6666666666666666, \"val_auc\": 0.8125}\n"
            "{\"step\": 100, \"train_loss\": 0.25, \"val_loss\": null, \"val_accuracy\": null, "
            "\"val_balanced_accuracy\": null, \"val_auc\": null}\n");
  { std::ofstream(tmp / "m.csv") << csv; }
  const auto back = read_curve_csv(tmp / "m.csv", 1000);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].train_loss, curve[0].train_loss);
  EXPECT_EQ(back[0].val_balanced_accuracy, curve[0].val_balanced_accuracy);
  EXPECT_TRUE(std::isnan(back[1].val_auc));
  EXPECT_EQ(read_curve_csv(tmp / "m.csv", 99).size(), 1u);  // rows after the checkpoint dropped
  EXPECT_TRUE(read_curve_csv(tmp / "missing.csv", 1000).empty());
  EXPECT_EQ(parse_select_metric("balanced_accuracy"), SelectMetric::BalancedAccuracy);
  EXPECT_EQ(select_value(SelectMetric::Loss, curve[0]), -0.5);
  EXPECT_THROW(parse_select_metric("f1"), Error);
  EXPECT_THROW(parse_sampling("random"), Error);
}
