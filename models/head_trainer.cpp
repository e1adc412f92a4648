// models/head_trainer.cpp: the head's training loop, its evaluation records and the run
// folder's checkpoint files (see head_trainer.h).
#include "models/head_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "engine/dataset.h"
#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/text_format.h"

namespace engine {

namespace fs = std::filesystem;

Sampling parse_sampling(const std::string& name) {
  if (name == "uniform") return Sampling::Uniform;
  if (name == "balanced") return Sampling::Balanced;
  fail("sampling '", name, "': expected uniform or balanced");
}

SelectMetric parse_select_metric(const std::string& name) {
  if (name == "auc") return SelectMetric::Auc;
  if (name == "balanced_accuracy") return SelectMetric::BalancedAccuracy;
  if (name == "accuracy") return SelectMetric::Accuracy;
  if (name == "loss") return SelectMetric::Loss;
  fail("select metric '", name, "': expected auc, balanced_accuracy, accuracy or loss");
}

double select_value(SelectMetric m, const CurvePoint& p) {
  switch (m) {
    case SelectMetric::Accuracy: return p.val_accuracy;
    case SelectMetric::BalancedAccuracy: return p.val_balanced_accuracy;
    case SelectMetric::Loss: return -p.val_loss;
    case SelectMetric::Auc: break;
  }
  return p.val_auc;
}

std::vector<int64_t> batch_indices(uint64_t seed, int64_t step, int64_t batch, Sampling sampling,
                                   const SplitIndices& split) {
  // Two odd 64-bit constants (golden ratio, splitmix64) mix seed and step into one engine seed.
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull ^
                      (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ull));
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  for (auto& i : idx) {
    if (sampling == Sampling::Balanced) {
      const auto& c = split.train_by_class[rng() % split.train_by_class.size()];
      i = c[rng() % c.size()];
    } else {
      i = split.train[rng() % split.train.size()];
    }
  }
  return idx;
}

ClassificationMetrics evaluate_head(HeadBackend& head, const CacheContents& cache,
                                    const std::vector<int64_t>& rows) {
  const int64_t k = head.config().classes;
  std::vector<float> x(rows.size() * kCacheFeatureSize),
      probs(rows.size() * static_cast<size_t>(k));
  std::vector<int32_t> y(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(cache.features.begin() + rows[i] * kCacheFeatureSize, kCacheFeatureSize,
                x.begin() + static_cast<long>(i * kCacheFeatureSize));
    y[i] = cache.labels[static_cast<size_t>(rows[i])];
  }
  head.predict(x.data(), static_cast<int64_t>(rows.size()), probs.data());
  return evaluate_classifier(probs, y, static_cast<int>(k));
}

namespace {

const std::vector<std::string> kCurveColumns = {
    "step", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc"};

// A metric as a CSV field: exact (round-trips), empty when not measured (NaN).
std::string csv_num(double v) { return std::isfinite(v) ? double_roundtrip(v) : std::string(); }

double parse_num(const std::string& s) {
  if (s.empty()) return NAN;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end == s.c_str() ? NAN : v;
}

// The state file written under a temporary name, then committed (fsync, rename, directory fsync):
// after a kill or power cut `path` holds the old state or the new one.
void save_state_durable(const HeadBackend& head, const std::string& path) {
  const std::string tmp = durable_tmp_name(path);
  try {
    head.save_state(tmp);
  } catch (...) {
    unlink_if_exists(tmp);
    throw;
  }
  commit_file_durable(tmp, path);
}

}  // namespace

std::string curve_csv(const std::vector<CurvePoint>& curve) {
  std::string s = csv_row(kCurveColumns) + "\n";
  for (const auto& p : curve)
    s += csv_row({std::to_string(p.step), csv_num(p.train_loss), csv_num(p.val_loss),
                  csv_num(p.val_accuracy), csv_num(p.val_balanced_accuracy), csv_num(p.val_auc)}) +
         "\n";
  return s;
}

std::string curve_jsonl(const std::vector<CurvePoint>& curve) {
  std::string s;
  for (const auto& p : curve)
    s += JsonObject()
             .integer("step", p.step)
             .number("train_loss", p.train_loss)
             .number("val_loss", p.val_loss)
             .number("val_accuracy", p.val_accuracy)
             .number("val_balanced_accuracy", p.val_balanced_accuracy)
             .number("val_auc", p.val_auc)
             .str() +
         "\n";
  return s;
}

std::vector<CurvePoint> read_curve_csv(const std::string& path, int64_t up_to) {
  std::vector<CurvePoint> out;
  if (!fs::exists(path)) return out;
  const auto rows = read_csv(path);
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.size() != kCurveColumns.size() || r[0].empty()) continue;
    CurvePoint p;
    p.step = std::strtoll(r[0].c_str(), nullptr, 10);
    p.train_loss = parse_num(r[1]), p.val_loss = parse_num(r[2]), p.val_accuracy = parse_num(r[3]);
    p.val_balanced_accuracy = parse_num(r[4]), p.val_auc = parse_num(r[5]);
    if (p.step <= up_to) out.push_back(p);
  }
  return out;
}

HeadTrainer::HeadTrainer(HeadTrainSettings settings, const CacheContents& cache,
                         const SplitIndices& split)
    : s_(std::move(settings)), cache_(cache), split_(split), best_value_(-INFINITY) {
  if (split_.train.empty()) fail("split: the train split is empty");
  ENGINE_CHECK(s_.batch > 0 && s_.eval_every > 0 && s_.steps >= 0, "train: batch ", s_.batch,
               ", eval_every ", s_.eval_every, ", steps ", s_.steps, " must be positive");
  s_.head.validate();
  fs::create_directories(s_.out);
  const std::string ckpt = checkpoint_path();
  auto make = [this](const HeadState& st) -> std::unique_ptr<HeadBackend> {
    if (s_.make_head) return s_.make_head(st);
    return std::make_unique<HeadCpu>(st);
  };
  if (!s_.resume) {
    std::error_code ec;
    fs::remove(ckpt, ec);
    // The seed's initial state; HeadCpu(state) holds the same bits as HeadCpu(config).
    head_ = make(head_initial_state(s_.head));
    return;
  }
  HeadState st = head_load_state(ckpt);
  const HeadConfig& a = st.config;
  const HeadConfig& b = s_.head;
  const RmsPropConfig &ao = a.optimizer, &bo = b.optimizer;
  if (a.classes != b.classes || a.hidden != b.hidden || a.seed != b.seed ||
      a.dropout != b.dropout || a.class_weights != b.class_weights || ao.formula != bo.formula ||
      ao.lr != bo.lr || ao.rho != bo.rho || ao.momentum != bo.momentum || ao.eps != bo.eps ||
      ao.decay_rate != bo.decay_rate || ao.decay_steps != bo.decay_steps ||
      ao.staircase != bo.staircase)
    fail(ckpt, ": checkpoint does not match ", s_.out, "/train_settings.csv",
         " (classes, layers, seed, dropout, class weights or optimizer); use --restart");
  head_ = make(st);
  curve_ = read_curve_csv(metrics_csv_path(), head_->step());
  const bool have_val = !split_.validation.empty();
  for (const auto& p : curve_)
    if (!have_val || select_value(s_.select, p) > best_value_)
      best_value_ = select_value(s_.select, p), best_step_ = p.step;
}

HeadTrainer::~HeadTrainer() = default;

int64_t HeadTrainer::step() const { return head_->step(); }

const char* HeadTrainer::device() const { return head_->device(); }

void HeadTrainer::evaluate_and_record(const HeadTrainObserver& observer, double train_loss) {
  const bool have_val = !split_.validation.empty();
  CurvePoint p{head_->step(), train_loss, NAN, NAN, NAN, NAN};
  if (have_val) {
    ClassificationMetrics vm = evaluate_head(*head_, cache_, split_.validation);
    p.val_loss = vm.loss, p.val_accuracy = vm.accuracy;
    p.val_balanced_accuracy = vm.balanced_accuracy, p.val_auc = vm.auc;
  }
  curve_.push_back(p);
  // Without a validation split every evaluation is the newest head: the last one is final.
  const bool best = !have_val || select_value(s_.select, p) > best_value_ || best_step_ < 0;
  if (best) {
    best_value_ = select_value(s_.select, p), best_step_ = p.step;
    save_state_durable(*head_, best_path());
  }
  write_file_durable(metrics_csv_path(), curve_csv(curve_));
  write_file_durable(s_.out + "/metrics.jsonl", curve_jsonl(curve_));
  save_state_durable(*head_, checkpoint_path());  // last: never ahead of metrics.csv
  if (observer.on_record) observer.on_record(p, best);
}

void HeadTrainer::run(const HeadTrainObserver& observer) {
  const int64_t batch = s_.batch;
  std::vector<float> x(static_cast<size_t>(batch * kCacheFeatureSize));
  std::vector<int32_t> y(static_cast<size_t>(batch));
  double loss_sum = 0;
  int64_t loss_n = 0;
  while (head_->step() < s_.steps) {
    const auto idx = batch_indices(s_.head.seed, head_->step(), batch, s_.sampling, split_);
    for (size_t i = 0; i < idx.size(); ++i) {
      std::copy_n(cache_.features.begin() + idx[i] * kCacheFeatureSize, kCacheFeatureSize,
                  x.begin() + static_cast<long>(i * kCacheFeatureSize));
      y[i] = cache_.labels[static_cast<size_t>(idx[i])];
    }
    const float loss = head_->train_step(x.data(), y.data(), batch);
    if (!std::isfinite(loss))
      fail("training diverged at step ", head_->step(), " (loss ", loss,
           "): lower --learning-rate");
    loss_sum += loss, ++loss_n;
    if (observer.on_step) observer.on_step(head_->step(), loss);
    if (head_->step() % s_.eval_every == 0 || head_->step() == s_.steps) {
      evaluate_and_record(observer, loss_sum / static_cast<double>(loss_n));
      loss_sum = 0, loss_n = 0;
    }
  }
  if (best_step_ < 0) {  // resumed at the end with no record left (cannot happen normally)
    best_step_ = head_->step();
    save_state_durable(*head_, best_path());
  }
}

HeadCpu HeadTrainer::final_head() const { return HeadCpu(head_load_state(best_path())); }

}  // namespace engine
