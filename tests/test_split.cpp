// tests/test_split.cpp: what a training run derives from the split (engine/split.h): the
// "balanced" class weights against scikit-learn's closed form, the index lists per subset and
// class, and the split.csv record. (SHA-1 and the retrain.py percentages: tests/test_metrics.cpp.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/split.h"

using namespace engine;

// sklearn.utils.class_weight.compute_class_weight('balanced', classes, y) is documented as
// n_samples / (n_classes * np.bincount(y)); the expected values below are that formula worked
// by hand, so a change in the formula (e.g. n_k / n, or normalising to sum 1) fails.
TEST(Split, BalancedClassWeightsAreSklearnsFormula) {
  // 300 benign, 60 melanoma: n = 360, K = 2 -> 360 / 600 = 0.6 and 360 / 120 = 3.
  std::vector<float> w = balanced_class_weights({300, 60});
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0], 0.6f);
  EXPECT_EQ(w[1], 3.0f);
  // 50 / 30 / 20: n = 100, K = 3 -> 100/150 = 2/3, 100/90 = 10/9, 100/60 = 5/3; each rounded
  // once from double to float.
  w = balanced_class_weights({50, 30, 20});
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], static_cast<float>(2.0 / 3.0));
  EXPECT_EQ(w[1], static_cast<float>(10.0 / 9.0));
  EXPECT_EQ(w[2], static_cast<float>(5.0 / 3.0));
  EXPECT_FLOAT_EQ(w[0], 0.6666667f);
  EXPECT_FLOAT_EQ(w[1], 1.1111112f);
  EXPECT_FLOAT_EQ(w[2], 1.6666666f);
  // The point of the formula: every class carries the same total weight n / K in the loss.
  const int64_t counts[3] = {50, 30, 20};
  for (int k = 0; k < 3; ++k)
    EXPECT_NEAR(counts[k] * w[static_cast<size_t>(k)], 100.0 / 3, 1e-5) << k;
  // Equal classes weigh 1.
  EXPECT_EQ(balanced_class_weights({7, 7, 7, 7}), std::vector<float>(4, 1.0f));
  // A class without train images has no finite weight: refused, naming the class.
  try {
    balanced_class_weights({10, 0});
    FAIL() << "a class without train images was given a weight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 1 has no train image"), std::string::npos)
        << e.what();
  }
}

TEST(Split, IndicesPerSubsetAndClassKeepCacheOrder) {
  const std::vector<Subset> s = {Subset::Train, Subset::Test,  Subset::Train, Subset::Validation,
                                 Subset::Train, Subset::Train, Subset::Test};
  const std::vector<int32_t> y = {1, 0, 0, 1, 1, 2, 2};
  const SplitIndices sp = split_indices(s, y, 3);
  EXPECT_EQ(sp.train, (std::vector<int64_t>{0, 2, 4, 5}));
  EXPECT_EQ(sp.validation, (std::vector<int64_t>{3}));
  EXPECT_EQ(sp.test, (std::vector<int64_t>{1, 6}));
  ASSERT_EQ(sp.train_by_class.size(), 3u);
  EXPECT_EQ(sp.train_by_class[0], (std::vector<int64_t>{2}));
  EXPECT_EQ(sp.train_by_class[1], (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(sp.train_by_class[2], (std::vector<int64_t>{5}));
  EXPECT_THROW(split_indices(s, {1, 0, 0, 1, 1, 2, 3}, 3), Error);  // label 3 of 3 classes
  EXPECT_THROW(split_indices(s, {1, 0}, 3), Error);                 // sizes differ
}

TEST(Split, CsvNamesTheClassAndQuotesFields) {
  const std::string csv = split_csv({"a,b/x.jpg", "y.jpg"}, {1, 0}, {"lesion \"7\"", ""},
                                    {"benign", "mel"}, {Subset::Validation, Subset::Train});
  EXPECT_EQ(csv,
            "path,label,group,subset\n"
            "\"a,b/x.jpg\",mel,\"lesion \"\"7\"\"\",validation\n"
            "y.jpg,benign,,train\n");
}
