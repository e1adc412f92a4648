// engine/metrics.cpp: see metrics.h.
#include "engine/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "engine/error.h"

namespace engine {

std::vector<RocPoint> roc_curve(const std::vector<double>& scores,
                                const std::vector<int>& positive) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  double P = 0, N = 0;
  for (int p : positive) (p ? P : N) += 1;
  std::vector<RocPoint> out{{0, 0, INFINITY}};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    (positive[idx[i]] ? tp : fp) += 1;
    // One point per distinct threshold: ties move together.
    if (i + 1 == idx.size() || scores[idx[i + 1]] != scores[idx[i]])
      out.push_back({N > 0 ? fp / N : 0, P > 0 ? tp / P : 0, scores[idx[i]]});
  }
  return out;
}

double roc_auc(const std::vector<double>& scores, const std::vector<int>& positive) {
  // Mann-Whitney U with average ranks for ties.
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double P = 0, N = 0, rank_sum = 0;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j < idx.size() && scores[idx[j]] == scores[idx[i]]) ++j;
    const double avg_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;
    for (size_t k = i; k < j; ++k)
      if (positive[idx[k]]) rank_sum += avg_rank;
    i = j;
  }
  for (int p : positive) (p ? P : N) += 1;
  if (P == 0 || N == 0) return NAN;
  return (rank_sum - P * (P + 1) / 2) / (P * N);
}

ClassificationMetrics evaluate_classifier(const std::vector<float>& probs,
                                          const std::vector<int32_t>& labels, int classes) {
  ENGINE_CHECK(classes >= 2, "metrics: need >= 2 classes, got ", classes);
  ENGINE_CHECK(probs.size() == labels.size() * static_cast<size_t>(classes),
               "metrics: ", probs.size(), " probabilities for ", labels.size(), " labels x ",
               classes, " classes");
  ClassificationMetrics m;
  m.n = static_cast<int64_t>(labels.size());
  m.classes = classes;
  m.confusion.assign(static_cast<size_t>(classes),
                     std::vector<int64_t>(static_cast<size_t>(classes), 0));
  double loss = 0;
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* p = probs.data() + i * static_cast<size_t>(classes);
    const int pred = static_cast<int>(std::max_element(p, p + classes) - p);
    const int y = labels[i];
    ENGINE_CHECK(y >= 0 && y < classes, "metrics: label ", y, " out of range [0, ", classes, ")");
    ++m.confusion[static_cast<size_t>(y)][static_cast<size_t>(pred)];
    correct += pred == y;
    loss -= std::log(std::max(static_cast<double>(p[y]), 1e-12));
  }
  m.loss = m.n ? loss / static_cast<double>(m.n) : NAN;
  m.accuracy = m.n ? static_cast<double>(correct) / static_cast<double>(m.n) : NAN;
  double recall_sum = 0;
  int present = 0;
  for (int k = 0; k < classes; ++k) {
    int64_t tp = m.confusion[k][k], fn = 0, fp = 0, tn = 0;
    for (int j = 0; j < classes; ++j)
      for (int i = 0; i < classes; ++i) {
        const int64_t c = m.confusion[i][j];
        if (i == k && j != k) fn += c;
        if (i != k && j == k) fp += c;
        if (i != k && j != k) tn += c;
      }
    const double sens = tp + fn ? static_cast<double>(tp) / static_cast<double>(tp + fn) : NAN;
    const double spec = tn + fp ? static_cast<double>(tn) / static_cast<double>(tn + fp) : NAN;
    m.sensitivity.push_back(sens);
    m.specificity.push_back(spec);
    if (tp + fn) recall_sum += sens, ++present;
  }
  m.balanced_accuracy = present ? recall_sum / present : NAN;
  // AUC: binary -> the last class is positive; K > 2 -> macro one-vs-rest over present classes.
  double auc_sum = 0;
  int auc_n = 0;
  for (int k = (classes == 2 ? 1 : 0); k < classes; ++k) {
    std::vector<double> s(labels.size());
    std::vector<int> pos(labels.size());
    for (size_t i = 0; i < labels.size(); ++i)
      s[i] = probs[i * static_cast<size_t>(classes) + static_cast<size_t>(k)],
      pos[i] = labels[i] == k;
    const double a = roc_auc(s, pos);
    if (!std::isnan(a)) auc_sum += a, ++auc_n;
    if (classes == 2) m.roc = roc_curve(s, pos);
  }
  m.auc = auc_n ? auc_sum / auc_n : NAN;
  return m;
}

double ClassificationMetrics::get(const std::string& name) const {
  if (name == "accuracy") return accuracy;
  if (name == "balanced_accuracy") return balanced_accuracy;
  if (name == "auc") return auc;
  if (name == "loss") return -loss;  // larger is better for every selectable metric
  fail("unknown metric '", name, "' (expected accuracy, balanced_accuracy, auc or loss)");
}

namespace {
std::string num(double v) {
  if (std::isnan(v) || std::isinf(v)) return "null";
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}
}  // namespace

std::string ClassificationMetrics::json() const {
  std::ostringstream os;
  os << "{\"n\": " << n << ", \"loss\": " << num(loss) << ", \"accuracy\": " << num(accuracy)
     << ", \"balanced_accuracy\": " << num(balanced_accuracy) << ", \"auc\": " << num(auc)
     << ", \"sensitivity\": [";
  for (size_t k = 0; k < sensitivity.size(); ++k) os << (k ? ", " : "") << num(sensitivity[k]);
  os << "], \"specificity\": [";
  for (size_t k = 0; k < specificity.size(); ++k) os << (k ? ", " : "") << num(specificity[k]);
  os << "], \"confusion\": [";
  for (size_t i = 0; i < confusion.size(); ++i) {
    os << (i ? ", " : "") << "[";
    for (size_t j = 0; j < confusion[i].size(); ++j) os << (j ? ", " : "") << confusion[i][j];
    os << "]";
  }
  os << "]}";
  return os.str();
}

}  // namespace engine
