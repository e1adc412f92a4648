// engine/metrics.h: what a dermatologist needs to trust a classifier on imbalanced data (ISIC
// ranks by AUC and balanced accuracy; accuracy alone misleads when melanoma is 2-20%): accuracy,
// balanced accuracy (mean per-class recall), per-class sensitivity and specificity (one vs rest),
// the confusion matrix, ROC curve and AUC (binary: the positive class is the last class, e.g.
// "malignant"/"melanoma"; K > 2: macro average of one-vs-rest AUCs), mean cross-entropy.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace engine {

struct RocPoint {
  double fpr, tpr, threshold;
};

struct ClassificationMetrics {
  int64_t n = 0;
  int classes = 0;
  double loss = 0, accuracy = 0, balanced_accuracy = 0, auc = 0;
  std::vector<double> sensitivity, specificity;  // per class, one vs rest
  std::vector<std::vector<int64_t>> confusion;   // [true][predicted]
  std::vector<RocPoint> roc;                     // positive class = classes - 1 (binary) or empty
  std::string json() const;                      // one JSON object
  double get(const std::string& name) const;     // "accuracy", "balanced_accuracy", "auc", "loss"
};

// probs: n x classes row-major (softmax outputs), labels in [0, classes).
ClassificationMetrics evaluate_classifier(const std::vector<float>& probs,
                                          const std::vector<int32_t>& labels, int classes);

// Area under the ROC curve of scores for the positive (label == 1) examples, ties counted 1/2
// (Mann-Whitney U). Returns NaN when one side is empty.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& positive);
std::vector<RocPoint> roc_curve(const std::vector<double>& scores,
                                const std::vector<int>& positive);

}  // namespace engine
