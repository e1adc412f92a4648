// tests/test_metrics.cpp: SHA-1 and the retrain.py split against values computed with Python's
// hashlib (independent), and the classification metrics against closed-form hand computations.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/split.h"

using namespace engine;

TEST(Sha1, FipsVectors) {
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(sha1_hex(std::string(1000000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST(Split, RetrainPercentageMatchesPythonHashlib) {
  // /usr/bin/python3: (int(hashlib.sha1(name).hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
  EXPECT_NEAR(retrain_percentage("benign/ISIC_0000000.jpg"), 7.167329692597163, 1e-9);
  EXPECT_NEAR(retrain_percentage("abc"), 60.19756615309094, 1e-9);
  // _nohash_ and everything after it is stripped: the name hashed is "cat".
  EXPECT_NEAR(retrain_percentage("dogs/cat_nohash_1.jpg"), 50.73477067600764, 1e-9);
  EXPECT_EQ(assign_subset("x/ISIC_0000000.jpg", "", 10, 10), Subset::Validation);  // 7.2 < 10
  EXPECT_EQ(assign_subset("x/ISIC_0000000.jpg", "", 5, 10), Subset::Test);         // 5 <= 7.2 < 15
  EXPECT_EQ(assign_subset("x/ISIC_0000000.jpg", "", 5, 1), Subset::Train);
  // With a group the group id is hashed: the image follows its lesion.
  EXPECT_EQ(assign_subset("x/ISIC_0000000.jpg", "abc", 10, 10), Subset::Train);  // 60.2
}

TEST(Split, GroupsStayTogetherAndTinyClassesAreAnError) {
  std::vector<std::string> paths, groups;
  std::vector<int32_t> labels;
  for (int i = 0; i < 400; ++i) {
    paths.push_back("ISIC_" + std::to_string(i) + ".jpg");
    groups.push_back("lesion_" + std::to_string(i / 4));
    labels.push_back(i % 2);
  }
  auto s = split_dataset(paths, groups, labels, {"benign", "malignant"}, 10, 10);
  for (int i = 0; i < 400; i += 4)
    for (int j = 1; j < 4; ++j) EXPECT_EQ(s[i], s[i + j]) << "lesion " << i / 4 << " split apart";
  // A class with 2 images cannot fill train, validation and test.
  std::vector<int32_t> few(400, 0);
  few[0] = few[1] = 1;
  try {
    split_dataset(paths, {}, few, {"benign", "malignant"}, 10, 10);
    FAIL() << "tiny class accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 'malignant' has 2 images"), std::string::npos)
        << e.what();
  }
}

TEST(Metrics, BinaryClosedForm) {
  // The classic example: labels 0 0 1 1, scores .1 .4 .35 .8 -> AUC 0.75.
  std::vector<float> probs = {0.9f, 0.1f, 0.6f, 0.4f, 0.65f, 0.35f, 0.2f, 0.8f};
  ClassificationMetrics m = evaluate_classifier(probs, {0, 0, 1, 1}, 2);
  EXPECT_DOUBLE_EQ(m.auc, 0.75);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.75);       // predictions 0 0 0 1
  EXPECT_DOUBLE_EQ(m.sensitivity[1], 0.5);  // melanoma recall
  EXPECT_DOUBLE_EQ(m.specificity[1], 1.0);
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, 0.75);  // (1 + 0.5) / 2
  EXPECT_NEAR(m.loss, -(std::log(0.9) + std::log(0.6) + std::log(0.35) + std::log(0.8)) / 4, 1e-6);
  EXPECT_EQ(m.confusion, (std::vector<std::vector<int64_t>>{{2, 0}, {1, 1}}));
  ASSERT_FALSE(m.roc.empty());
  EXPECT_DOUBLE_EQ(m.roc.front().fpr, 0);
  EXPECT_DOUBLE_EQ(m.roc.back().tpr, 1);
  EXPECT_DOUBLE_EQ(m.roc.back().fpr, 1);
}

TEST(Metrics, TiesImbalanceAndMulticlass) {
  EXPECT_DOUBLE_EQ(roc_auc({0.5, 0.5, 0.5}, {0, 1, 0}), 0.5);
  EXPECT_TRUE(std::isnan(roc_auc({0.1, 0.2}, {0, 0})));
  // 9 benign predicted benign, 1 melanoma missed: accuracy 0.9, balanced accuracy 0.5.
  std::vector<float> p;
  std::vector<int32_t> y;
  for (int i = 0; i < 10; ++i) p.push_back(0.7f), p.push_back(0.3f), y.push_back(i == 9);
  ClassificationMetrics m = evaluate_classifier(p, y, 2);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.9);
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, 0.5);
  EXPECT_DOUBLE_EQ(m.auc, 0.5);
  // 3 classes, perfectly separated: every one-vs-rest AUC is 1.
  ClassificationMetrics k3 =
      evaluate_classifier({0.8f, 0.1f, 0.1f, 0.1f, 0.8f, 0.1f, 0.1f, 0.1f, 0.8f}, {0, 1, 2}, 3);
  EXPECT_DOUBLE_EQ(k3.auc, 1.0);
  EXPECT_DOUBLE_EQ(k3.balanced_accuracy, 1.0);
  EXPECT_THROW(evaluate_classifier({0.5f, 0.5f}, {2}, 2), Error);
}
