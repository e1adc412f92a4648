// tools/train.cpp: trains the classifier head on a bottleneck cache written by tools/extract.
//
//   train --cache cache.h5 --out run/ [--steps 4000] [--batch 128] [--learning-rate 1e-3]
//         [--decay-rate 0.9 --decay-steps 1000 --staircase] [--rmsprop tf1|torch]
//         [--class-weights none|balanced|w0,w1,..] [--sampling uniform|balanced]
//         [--select auc|balanced_accuracy|accuracy|loss] [--eval-every 100] [--restart]
//
// Split as the TF retrain tutorial (by file-name hash, or by lesion/patient group when the cache
// has groups). Every --eval-every steps: validation metrics to metrics.csv, a checkpoint
// (checkpoint.h5, atomic), and best.h5 when the selected validation metric improves. A rerun
// after a kill resumes from checkpoint.h5 and gives the same result as an unbroken run (batches
// and dropout masks depend only on (seed, step)). At the end: the best head is evaluated on the
// test split; outputs head_keras.h5 (Keras Dense layout + class_names), metrics.json (test) and
// metrics.csv / metrics.jsonl (one row per evaluation), split.csv,
// report.html (curves and ROC as SVG).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/metrics.h"
#include "engine/progress.h"
#include "engine/report.h"
#include "engine/split.h"
#include "models/head.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

struct Options {
  std::string cache, out, rmsprop = "tf1", class_weights = "none", sampling = "uniform", select = "auc";
  std::string device = "cpu";
  int64_t steps = 4000, batch = 128, eval_every = 100, decay_steps = 1000;
  double lr = 1e-4, decay_rate = 0.9, momentum = 0.0, rho = 0.9, eps = -1, dropout = 0.5;
  double validation_pct = 10, test_pct = 10;
  bool staircase = false, restart = false, quiet = false;
  uint64_t seed = 1;
  std::vector<int64_t> hidden{512, 512};
};

struct Split {
  std::vector<int64_t> train, val, test;
};

// Indices of one batch for `step`: a function of (seed, step) only, so a resumed run draws the
// same batches. Uniform: with replacement over the train set (as retrain.py's random cached
// bottlenecks); balanced: a class uniformly, then an example of it.
std::vector<int64_t> batch_indices(const Options& o, int64_t step, const std::vector<int64_t>& train,
                                   const std::vector<std::vector<int64_t>>& by_class) {
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ull));
  std::vector<int64_t> idx(static_cast<size_t>(o.batch));
  for (auto& i : idx) {
    if (o.sampling == "balanced") {
      const auto& c = by_class[rng() % by_class.size()];
      i = c[rng() % c.size()];
    } else {
      i = train[rng() % train.size()];
    }
  }
  return idx;
}

ClassificationMetrics evaluate(HeadCpu& head, const CacheContents& c, const std::vector<int64_t>& rows) {
  const int64_t k = head.config().classes;
  std::vector<float> x(rows.size() * kCacheFeatureSize), probs(rows.size() * static_cast<size_t>(k));
  std::vector<int32_t> y(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(c.features.begin() + rows[i] * kCacheFeatureSize, kCacheFeatureSize, x.begin() + static_cast<long>(i * kCacheFeatureSize));
    y[i] = c.labels[static_cast<size_t>(rows[i])];
  }
  head.predict(x.data(), static_cast<int64_t>(rows.size()), probs.data());
  return evaluate_classifier(probs, y, static_cast<int>(k));
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) fail(path, ": cannot write");
    f << text;
    if (!f) fail(path, ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, ": rename failed");
}

void save_state_atomic(const HeadCpu& head, const std::string& path) {
  head.save_state(path + ".tmp");
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0) fail(path, ": rename failed");
}

// metrics.csv rows up to `step` (a resumed run rewrites the file from its checkpoint on).
std::vector<CurvePoint> read_curve(const std::string& path, int64_t up_to) {
  std::vector<CurvePoint> out;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    CurvePoint p;
    if (std::sscanf(line.c_str(), "%ld,%lf,%lf,%lf,%lf,%lf", &p.step, &p.train_loss, &p.val_loss,
                    &p.val_accuracy, &p.val_balanced_accuracy, &p.val_auc) == 6 && p.step <= up_to)
      out.push_back(p);
  }
  return out;
}

std::string curve_csv(const std::vector<CurvePoint>& curve) {
  std::ostringstream os;
  os << "step,train_loss,val_loss,val_accuracy,val_balanced_accuracy,val_auc\n";
  os.precision(7);
  for (const auto& p : curve)
    os << p.step << "," << p.train_loss << "," << p.val_loss << "," << p.val_accuracy << ","
       << p.val_balanced_accuracy << "," << p.val_auc << "\n";
  return os.str();
}

// The same rows as JSON lines (one object per evaluation), for tools that prefer JSON.
std::string curve_jsonl(const std::vector<CurvePoint>& curve) {
  std::ostringstream os;
  os.precision(7);
  auto num = [](double v) { return std::isfinite(v) ? std::to_string(v) : std::string("null"); };
  for (const auto& p : curve)
    os << "{\"step\": " << p.step << ", \"train_loss\": " << num(p.train_loss) << ", \"val_loss\": " << num(p.val_loss)
       << ", \"val_accuracy\": " << num(p.val_accuracy) << ", \"val_balanced_accuracy\": " << num(p.val_balanced_accuracy)
       << ", \"val_auc\": " << num(p.val_auc) << "}\n";
  return os.str();
}

double select_value(const Options& o, const CurvePoint& p) {
  if (o.select == "accuracy") return p.val_accuracy;
  if (o.select == "balanced_accuracy") return p.val_balanced_accuracy;
  if (o.select == "loss") return -p.val_loss;
  return p.val_auc;
}

int run_train(const Options& o) {
  // The head trains at ~76 steps/s on the 2-core CPU; the GPU head (models/head_cuda.cu) has not
  // run on a GPU yet, so auto means the CPU until it has been verified.
  resolve_device(o.device);  // validates the flag
  if (o.device == "cuda")
    fail("--device cuda: the GPU head (models/head_cuda.cu) is not verified on a GPU yet; use --device cpu");
  CacheContents c = read_cache(o.cache);
  const int K = static_cast<int>(c.class_names.size());
  if (K < 2) fail(o.cache, ": the cache has ", K, " classes; training needs labelled images of >= 2 classes");
  for (size_t i = 0; i < c.size(); ++i)
    if (c.labels[i] < 0) fail(o.cache, ": image '", c.paths[i], "' has no label; training needs a labelled cache");
  const bool grouped = std::any_of(c.groups.begin(), c.groups.end(), [](const std::string& g) { return !g.empty(); });
  std::vector<Subset> subset = split_dataset(c.paths, grouped ? c.groups : std::vector<std::string>{}, c.labels,
                                             c.class_names, o.validation_pct, o.test_pct);
  Split sp;
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(K));
  std::ostringstream split_csv;
  split_csv << "path,label,group,subset\n";
  for (size_t i = 0; i < c.size(); ++i) {
    auto& v = subset[i] == Subset::Train ? sp.train : subset[i] == Subset::Validation ? sp.val : sp.test;
    v.push_back(static_cast<int64_t>(i));
    if (subset[i] == Subset::Train) by_class[static_cast<size_t>(c.labels[i])].push_back(static_cast<int64_t>(i));
    split_csv << c.paths[i] << "," << c.class_names[static_cast<size_t>(c.labels[i])] << "," << c.groups[i] << ","
              << subset_name(subset[i]) << "\n";
  }
  fs::create_directories(o.out);
  write_text_atomic(o.out + "/split.csv", split_csv.str());
  std::printf("cache: %s: %zu images, classes:", o.cache.c_str(), c.size());
  for (int k = 0; k < K; ++k) std::printf(" %s=%zu", c.class_names[static_cast<size_t>(k)].c_str(), by_class[static_cast<size_t>(k)].size());
  std::printf(" (train); split%s: train %zu, validation %zu, test %zu\n", grouped ? " by group" : "",
              sp.train.size(), sp.val.size(), sp.test.size());
  std::fflush(stdout);

  HeadConfig cfg;
  cfg.input = kCacheFeatureSize;
  cfg.hidden = o.hidden;
  cfg.classes = K;
  cfg.dropout = static_cast<float>(o.dropout);
  cfg.seed = o.seed;
  cfg.optimizer.formula = o.rmsprop == "torch" ? RmsPropFormula::Torch : RmsPropFormula::TF1;
  cfg.optimizer.lr = o.lr;
  cfg.optimizer.rho = o.rho;
  cfg.optimizer.momentum = o.momentum;
  cfg.optimizer.eps = o.eps > 0 ? o.eps : RmsPropConfig::default_eps(cfg.optimizer.formula);
  cfg.optimizer.decay_rate = o.decay_rate;
  cfg.optimizer.decay_steps = o.decay_steps;
  cfg.optimizer.staircase = o.staircase;
  if (o.class_weights == "balanced") {
    for (int k = 0; k < K; ++k)
      cfg.class_weights.push_back(static_cast<float>(static_cast<double>(sp.train.size()) /
                                                     (K * static_cast<double>(by_class[static_cast<size_t>(k)].size()))));
  } else if (o.class_weights != "none") {
    std::stringstream ss(o.class_weights);
    std::string tok;
    while (std::getline(ss, tok, ',')) cfg.class_weights.push_back(std::stof(tok));
    if (static_cast<int>(cfg.class_weights.size()) != K)
      fail("--class-weights: ", cfg.class_weights.size(), " values for ", K, " classes");
  }
  cfg.validate();

  const std::string ckpt = o.out + "/checkpoint.h5", best = o.out + "/best.h5", csv = o.out + "/metrics.csv";
  std::unique_ptr<HeadCpu> head;
  std::vector<CurvePoint> curve;
  double best_value = -INFINITY;
  int64_t best_step = -1;
  if (!o.restart && fs::exists(ckpt)) {
    HeadState st = head_load_state(ckpt);
    if (st.config.classes != cfg.classes || st.config.hidden != cfg.hidden || st.config.seed != cfg.seed ||
        st.config.dropout != cfg.dropout || st.config.class_weights != cfg.class_weights)
      fail(ckpt, ": checkpoint was made with other settings (classes, layers, seed, dropout or class weights); use --restart");
    head = std::make_unique<HeadCpu>(st);
    curve = read_curve(csv, head->step());
    for (const auto& p : curve)
      if (select_value(o, p) > best_value) best_value = select_value(o, p), best_step = p.step;
    std::printf("resuming from %s at step %ld\n", ckpt.c_str(), static_cast<long>(head->step()));
  } else {
    head = std::make_unique<HeadCpu>(cfg);
  }
  if (sp.train.empty()) fail("split: the train split is empty");

  Progress progress("train", o.steps, "step");
  progress.set_quiet(o.quiet);
  progress.advance(head->step());
  std::vector<float> x(static_cast<size_t>(o.batch * kCacheFeatureSize));
  std::vector<int32_t> y(static_cast<size_t>(o.batch));
  double loss_sum = 0;
  int64_t loss_n = 0;
  while (head->step() < o.steps) {
    const auto idx = batch_indices(o, head->step(), sp.train, by_class);
    for (size_t i = 0; i < idx.size(); ++i) {
      std::copy_n(c.features.begin() + idx[i] * kCacheFeatureSize, kCacheFeatureSize, x.begin() + static_cast<long>(i * kCacheFeatureSize));
      y[i] = c.labels[static_cast<size_t>(idx[i])];
    }
    const float loss = head->train_step(x.data(), y.data(), o.batch);
    if (!std::isfinite(loss)) fail("training diverged at step ", head->step(), " (loss ", loss, "): lower --learning-rate");
    loss_sum += loss, ++loss_n;
    progress.advance(1);
    if (head->step() % o.eval_every == 0 || head->step() == o.steps) {
      ClassificationMetrics vm = sp.val.empty() ? ClassificationMetrics{} : evaluate(*head, c, sp.val);
      CurvePoint p{head->step(), loss_sum / static_cast<double>(loss_n), vm.loss, vm.accuracy, vm.balanced_accuracy, vm.auc};
      loss_sum = 0, loss_n = 0;
      curve.push_back(p);
      if (select_value(o, p) > best_value || best_step < 0) {
        best_value = select_value(o, p), best_step = p.step;
        save_state_atomic(*head, best);
      }
      write_text_atomic(csv, curve_csv(curve));
      write_text_atomic(o.out + "/metrics.jsonl", curve_jsonl(curve));
      save_state_atomic(*head, ckpt);  // last: a checkpoint never runs ahead of metrics.csv
      progress.set_note("val " + o.select + " " + std::to_string(select_value(o, p)).substr(0, 6));
    }
  }
  progress.finish();

  HeadCpu final_head(head_load_state(best));
  ClassificationMetrics test = sp.test.empty() ? ClassificationMetrics{} : evaluate(final_head, c, sp.test);
  const std::string keras = o.out + "/head_keras.h5";
  final_head.save_keras_h5(keras + ".tmp");
  {  // Beside the Keras layers: class names (predict's columns) and the cache's fingerprint and
     // preprocessing (predict must feed the head features made the same way).
    H5Id f(H5Fopen((keras + ".tmp").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    if (!f.valid()) fail(keras, ": cannot reopen to add attributes");
    auto put = [&](const char* name, const std::vector<std::string>& values, bool scalar) {
      std::vector<const char*> ptrs;
      for (auto& v : values) ptrs.push_back(v.c_str());
      hsize_t dims[1] = {ptrs.size()};
      H5Id space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr));
      H5Id type(H5Tcopy(H5T_C_S1));
      H5Tset_size(type.get(), H5T_VARIABLE);
      H5Tset_cset(type.get(), H5T_CSET_UTF8);
      H5Id attr(H5Acreate2(f.get(), name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
      if (!attr.valid() || H5Awrite(attr.get(), type.get(), ptrs.data()) < 0)
        fail(keras, ": H5Awrite failed for attribute '", name, "'");
    };
    put("class_names", c.class_names, false);
    put("preprocessing", {c.settings.preprocessing}, true);
    put("inception_weights_sha256", {c.settings.weights_sha256}, true);
  }
  if (std::rename((keras + ".tmp").c_str(), keras.c_str()) != 0) fail(keras, ": rename failed");

  std::vector<std::pair<std::string, std::string>> settings = {
      {"cache", o.cache}, {"images", std::to_string(c.size())}, {"classes", std::to_string(K)},
      {"split", "validation " + std::to_string(o.validation_pct) + "%, test " + std::to_string(o.test_pct) + "%" + (grouped ? ", by group" : "")},
      {"head", "2048 -> 512 -> 512 -> " + std::to_string(K) + ", dropout " + std::to_string(o.dropout)},
      {"optimizer", "RMSProp (" + o.rmsprop + "), lr " + std::to_string(o.lr) + ", decay " + std::to_string(o.decay_rate) + " every " + std::to_string(o.decay_steps) + " steps"},
      {"steps", std::to_string(o.steps) + " x batch " + std::to_string(o.batch)},
      {"sampling / class weights", o.sampling + " / " + o.class_weights},
      {"best step", std::to_string(best_step) + " (validation " + o.select + ")"}, {"seed", std::to_string(o.seed)}};
  write_report_html(o.out + "/report.html", "Melanoma head: " + o.cache, curve, test, c.class_names, settings);
  std::ostringstream js;
  js << "{\"best_step\": " << best_step << ", \"select\": \"" << o.select << "\", \"test\": " << test.json()
     << ", \"class_names\": [";
  for (int k = 0; k < K; ++k) js << (k ? ", " : "") << "\"" << c.class_names[static_cast<size_t>(k)] << "\"";
  js << "]}\n";
  write_text_atomic(o.out + "/metrics.json", js.str());
  std::printf("test (%ld images, best step %ld): AUC %.4f, balanced accuracy %.4f, accuracy %.4f, loss %.4f\n",
              static_cast<long>(test.n), static_cast<long>(best_step), test.auc, test.balanced_accuracy,
              test.accuracy, test.loss);
  for (int k = 0; k < K && k < static_cast<int>(test.sensitivity.size()); ++k)
    std::printf("  %-14s sensitivity %.4f specificity %.4f\n", c.class_names[static_cast<size_t>(k)].c_str(),
                test.sensitivity[static_cast<size_t>(k)], test.specificity[static_cast<size_t>(k)]);
  std::printf("report: %s/report.html; head: %s; metrics: %s/metrics.json, %s\n", o.out.c_str(), keras.c_str(),
              o.out.c_str(), csv.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train the 2048-512-512-K head on a bottleneck cache"};
  Options o;
  app.add_option("--cache", o.cache, "bottleneck cache from tools/extract")->required();
  app.add_option("--out", o.out, "output folder (checkpoints, head, metrics, report)")->required();
  app.add_option("--steps", o.steps, "training steps")->check(CLI::Range(int64_t(1), int64_t(100000000)));
  app.add_option("--batch", o.batch, "batch size")->check(CLI::Range(int64_t(1), int64_t(65536)));
  app.add_option("--learning-rate", o.lr, "initial learning rate")->check(CLI::PositiveNumber);
  app.add_option("--decay-rate", o.decay_rate, "exponential decay rate")->check(CLI::Range(0.0, 1.0));
  app.add_option("--decay-steps", o.decay_steps, "decay period in steps (0: constant)")->check(CLI::NonNegativeNumber);
  app.add_flag("--staircase", o.staircase, "decay in steps (floor)");
  app.add_option("--rmsprop", o.rmsprop, "tf1 (TF RMSPropOptimizer) or torch")->check(CLI::IsMember({"tf1", "torch"}));
  app.add_option("--momentum", o.momentum, "RMSProp momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--rho", o.rho, "RMSProp decay of the mean square")->check(CLI::Range(0.0, 0.9999));
  app.add_option("--epsilon", o.eps, "RMSProp epsilon (default 1e-10 tf1, 1e-8 torch)");
  app.add_option("--dropout", o.dropout, "dropout rate")->check(CLI::Range(0.0, 0.95));
  app.add_option("--hidden", o.hidden, "hidden layer sizes")->check(CLI::Range(int64_t(1), int64_t(65536)));
  app.add_option("--class-weights", o.class_weights, "none, balanced, or w0,w1,...");
  app.add_option("--sampling", o.sampling, "uniform or balanced")->check(CLI::IsMember({"uniform", "balanced"}));
  app.add_option("--select", o.select, "validation metric for the best checkpoint")
      ->check(CLI::IsMember({"auc", "balanced_accuracy", "accuracy", "loss"}));
  app.add_option("--eval-every", o.eval_every, "evaluate and checkpoint every N steps")->check(CLI::Range(int64_t(1), int64_t(1000000)));
  app.add_option("--validation-percent", o.validation_pct, "validation share")->check(CLI::Range(0.0, 50.0));
  app.add_option("--test-percent", o.test_pct, "test share")->check(CLI::Range(0.0, 50.0));
  app.add_option("--seed", o.seed, "seed of the weights, dropout and batches");
  app.add_option("--device", o.device, "cpu (default), cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_flag("--restart", o.restart, "ignore an existing checkpoint");
  app.add_flag("--quiet", o.quiet, "no progress output");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    return run_train(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 1;
  }
}
