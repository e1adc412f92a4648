// models/head_trainer.h: the training loop of the classifier head on a bottleneck cache (what
// tools/train runs; the tool parses flags, calls this and prints). A run lives in one folder:
//   checkpoint.h5  the head's whole state (params, RMSProp slots, step) after the latest
//                  evaluation; a rerun resumes from it bit for bit
//   best.h5        the state at the best evaluation so far (by the selected validation metric;
//                  without a validation split, the latest evaluation)
//   metrics.csv    one row per evaluation: step, mean train loss since the previous row, and the
//                  validation loss, accuracy, balanced accuracy, AUC (empty when not measured)
//   metrics.jsonl  the same rows as JSON objects (null when not measured)
// The head runs on the device the caller picks (HeadTrainSettings::make_head: HeadCpu by default,
// HeadCuda from tools/train --device cuda); evaluation, checkpoints, resume and best-head
// tracking go through the HeadBackend interface (models/head.h) and are the same on both. A
// checkpoint is device-independent, so a run may resume on the other device.
// Every --eval-every steps (and at the last step) the loop evaluates, updates best.h5, rewrites
// both record files and then the checkpoint, each durably (engine/durable_file.h): the checkpoint
// is written last, so it never runs ahead of metrics.csv. Batches are drawn from (seed, step)
// only and the head's dropout masks likewise, so a resumed run equals an unbroken one.
// Tests: tests/test_head_trainer.cpp (library), tests/test_train.cpp (the tool, kill + resume).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/metrics.h"
#include "engine/report.h"
#include "engine/split.h"
#include "models/head.h"

namespace engine {

// Uniform: batches drawn with replacement over the train rows (as retrain.py draws its random
// cached bottlenecks); Balanced: a class uniformly, then a train row of it.
enum class Sampling { Uniform, Balanced };
Sampling parse_sampling(const std::string& name);  // "uniform" | "balanced"; throws otherwise

// The validation metric that picks best.h5.
enum class SelectMetric { Auc, BalancedAccuracy, Accuracy, Loss };
SelectMetric parse_select_metric(const std::string& name);  // "auc", "balanced_accuracy", ...
// The value best.h5 maximizes: the metric, or minus the loss.
double select_value(SelectMetric m, const CurvePoint& p);

struct HeadTrainSettings {
  std::string out;       // the run folder (created when missing)
  HeadConfig head;       // layers, dropout, seed, optimizer, class weights
  int64_t steps = 4000;  // train until the head's step reaches this
  int64_t batch = 128;
  int64_t eval_every = 100;
  Sampling sampling = Sampling::Uniform;
  SelectMetric select = SelectMetric::Auc;
  bool resume = false;  // continue from out/checkpoint.h5 instead of starting over
  // Makes the head from its initial or resumed state; empty: HeadCpu. (A function, not a device
  // enum, so this CPU library does not depend on the CUDA one: tools/train supplies HeadCuda.)
  std::function<std::unique_ptr<HeadBackend>(const HeadState&)> make_head;
};

// What the loop tells its caller as it goes (each may be empty).
struct HeadTrainObserver {
  std::function<void(int64_t step, float loss)> on_step;  // after each step (step: the new one)
  std::function<void(const CurvePoint& record, bool best)> on_record;  // after each evaluation
};

// The rows of one batch for `step`: a function of (seed, step) only.
std::vector<int64_t> batch_indices(uint64_t seed, int64_t step, int64_t batch, Sampling sampling,
                                   const SplitIndices& split);

// Classification metrics of `head` (no dropout) on the cache rows `rows`.
ClassificationMetrics evaluate_head(HeadBackend& head, const CacheContents& cache,
                                    const std::vector<int64_t>& rows);

// The record files: metrics.csv and metrics.jsonl text for `curve`, and metrics.csv read back
// (rows with step <= up_to only; a missing file is an empty curve).
std::string curve_csv(const std::vector<CurvePoint>& curve);
std::string curve_jsonl(const std::vector<CurvePoint>& curve);
std::vector<CurvePoint> read_curve_csv(const std::string& path, int64_t up_to);

class HeadTrainer {
 public:
  // Fresh (resume false): creates the folder, removes an old checkpoint.h5 (so a kill before
  // this run's first checkpoint cannot leave an old checkpoint behind) and initializes the head
  // from the seed. Resume: loads checkpoint.h5, refuses one made with another head config
  // (classes, layers, seed, dropout, class weights or optimizer), and reads back the records up
  // to its step, and with them the best value so far. `cache` and `split` must outlive this.
  HeadTrainer(HeadTrainSettings settings, const CacheContents& cache, const SplitIndices& split);
  ~HeadTrainer();

  int64_t step() const;        // the head's step: 0, or the checkpoint's
  const char* device() const;  // where the head trains: "cpu" / "cuda"
  const HeadTrainSettings& settings() const { return s_; }
  const std::vector<CurvePoint>& curve() const { return curve_; }
  int64_t best_step() const { return best_step_; }  // -1 before the first evaluation
  std::string checkpoint_path() const { return s_.out + "/checkpoint.h5"; }
  std::string best_path() const { return s_.out + "/best.h5"; }
  std::string metrics_csv_path() const { return s_.out + "/metrics.csv"; }

  // Trains from step() to settings.steps (nothing when already there). Throws when the loss is
  // not finite (the run diverged).
  void run(const HeadTrainObserver& observer = {});
  // The final head: best.h5 as saved (config and weights), for the test metrics and export.
  HeadCpu final_head() const;

 private:
  void evaluate_and_record(const HeadTrainObserver& observer, double train_loss);

  HeadTrainSettings s_;
  const CacheContents& cache_;
  const SplitIndices& split_;
  std::unique_ptr<HeadBackend> head_;
  std::vector<CurvePoint> curve_;
  double best_value_;
  int64_t best_step_ = -1;
};

}  // namespace engine
