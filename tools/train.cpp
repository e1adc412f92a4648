// tools/train.cpp: trains the classifier head on a bottleneck cache written by tools/extract.
//
//   train --cache cache.h5 --out run/ [--steps 4000] [--batch 128] [--learning-rate 1e-4]
//         [--hidden 512 512] [--decay-rate 0.9 --decay-steps 1000 --staircase] [--rmsprop
//         tf1|torch]
//         [--class-weights none|balanced|w0,w1,..] [--sampling uniform|balanced]
//         [--select auc|balanced_accuracy|accuracy|loss] [--eval-every 100] [--restart]
//         [--device cpu|cuda|auto]
//
// The tool parses and checks flags, keeps the run's settings, calls the library and prints. The
// split (retrain.py's file-name hash, or by lesion/patient group when the cache has groups) and
// the balanced class weights are engine/split.h; the loop (batches from (seed, step), evaluation
// every --eval-every steps into metrics.csv / metrics.jsonl, checkpoint.h5, best.h5 by the
// selected validation metric, resume bit for bit after a kill) is models/head_trainer.h; the head
// file is models/head_keras.h; the report engine/report.h. --device cuda trains HeadCuda
// (models/head_cuda.cu, the whole step in a CUDA graph); the final test evaluation and the head
// file are made on the CPU from best.h5 either way. With --validation-percent 0 there is
// nothing to select on: the final head is the last step's. The run's settings are kept in
// train_settings.csv: a resume takes them from there; a flag given again with another value is
// refused (exit 2) unless it may change mid-run (--steps to extend, --eval-every). At the end: the
// best head is evaluated on the test split; outputs head_keras.h5 (Keras Dense layout +
// class_names), metrics.json (test), split.csv, report.html (curves and ROC as SVG), each
// written durably (engine/durable_file.h).
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/bottleneck_cache.h"
#include "engine/cli_status.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/progress.h"
#include "engine/report.h"
#include "engine/split.h"
#include "engine/text_format.h"
#include "models/head.h"
#include "models/head_keras.h"
#include "models/head_trainer.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

// A bad flag found after parsing (a resume that would change a fixed setting, class weights that
// do not match the cache): one line, exit status 2.
struct FlagError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string cache, out, rmsprop = "tf1", class_weights = "none", sampling = "uniform",
                          select = "auc";
  std::string device = "cpu";
  int64_t steps = 4000, batch = 128, eval_every = 100, decay_steps = 1000;
  double lr = 1e-4, decay_rate = 0.9, momentum = 0.0, rho = 0.9, eps = -1, dropout = 0.5;
  double validation_pct = 10, test_pct = 10;
  bool staircase = false, restart = false, quiet = false;
  uint64_t seed = 1;
  std::vector<int64_t> hidden{512, 512};
  std::set<std::string> given;  // flags given on the command line
};

// --class-weights w0,w1,...: every value a whole decimal number, finite and > 0 (a zero weight
// drops a class from the loss, which the head cannot train on). Throws a one-line message.
std::vector<float> parse_class_weights(const std::string& spec) {
  std::vector<float> w;
  std::stringstream ss(spec);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    const char* b = tok.c_str();
    char* end = nullptr;
    const double v = std::strtod(b, &end);
    if (tok.empty() || end == b || *end != '\0' || tok.find_first_of(" \t") != std::string::npos)
      throw std::invalid_argument(
          "--class-weights: '" + tok +
          "' is not a number (expected none, balanced or w0,w1,... e.g. 1,4)");
    if (!std::isfinite(v) || v <= 0 || v > 1e6)
      throw std::invalid_argument("--class-weights: " + tok + " must be > 0 and <= 1e6");
    w.push_back(static_cast<float>(v));
  }
  if (spec.empty() || spec.back() == ',')
    throw std::invalid_argument("--class-weights: empty value in '" + spec + "'");
  return w;
}

double effective_eps(const Options& o) {
  return o.eps > 0 ? o.eps
                   : RmsPropConfig::default_eps(o.rmsprop == "torch" ? RmsPropFormula::Torch
                                                                     : RmsPropFormula::TF1);
}

// Every training setting, as text, with whether it may change when a run is resumed. The text
// form round-trips (doubles through double_roundtrip), so equal settings compare equal.
struct SettingDef {
  const char* flag;
  bool may_change;
  std::function<std::string(const Options&)> get;
  std::function<void(Options&, const std::string&)> set;
};

// The plain settings: one Options member, printed and parsed the same way for every flag.
SettingDef int_setting(const char* flag, bool may_change, int64_t Options::*m) {
  return {flag, may_change, [m](const Options& o) { return std::to_string(o.*m); },
          [m](Options& o, const std::string& s) {
            o.*m = static_cast<int64_t>(std::strtoll(s.c_str(), nullptr, 10));
          }};
}
SettingDef real_setting(const char* flag, bool may_change, double Options::*m) {
  return {flag, may_change, [m](const Options& o) { return double_roundtrip(o.*m); },
          [m](Options& o, const std::string& s) { o.*m = std::strtod(s.c_str(), nullptr); }};
}
SettingDef text_setting(const char* flag, bool may_change, std::string Options::*m) {
  return {flag, may_change, [m](const Options& o) { return o.*m; },
          [m](Options& o, const std::string& s) { o.*m = s; }};
}

const std::vector<SettingDef>& setting_defs() {
  static const std::vector<SettingDef> defs = {
      int_setting("--steps", true, &Options::steps),
      int_setting("--eval-every", true, &Options::eval_every),
      int_setting("--batch", false, &Options::batch),
      {"--hidden", false,
       [](const Options& o) {
         std::string s;
         for (size_t i = 0; i < o.hidden.size(); ++i)
           s += (i ? " " : "") + std::to_string(o.hidden[i]);
         return s;
       },
       [](Options& o, const std::string& s) {
         o.hidden.clear();
         std::istringstream is(s);
         for (int64_t v; is >> v;) o.hidden.push_back(v);
       }},
      real_setting("--dropout", false, &Options::dropout),
      {"--seed", false, [](const Options& o) { return std::to_string(o.seed); },
       [](Options& o, const std::string& s) { o.seed = std::strtoull(s.c_str(), nullptr, 10); }},
      text_setting("--rmsprop", false, &Options::rmsprop),
      real_setting("--learning-rate", false, &Options::lr),
      real_setting("--decay-rate", false, &Options::decay_rate),
      int_setting("--decay-steps", false, &Options::decay_steps),
      {"--staircase", false,
       [](const Options& o) { return std::string(o.staircase ? "true" : "false"); },
       [](Options& o, const std::string& s) { o.staircase = s == "true"; }},
      real_setting("--momentum", false, &Options::momentum),
      real_setting("--rho", false, &Options::rho),
      // Written as the epsilon in effect (the formula's default when none was given).
      {"--epsilon", false, [](const Options& o) { return double_roundtrip(effective_eps(o)); },
       [](Options& o, const std::string& s) { o.eps = std::strtod(s.c_str(), nullptr); }},
      {"--class-weights", false,
       [](const Options& o) {
         if (o.class_weights == "none" || o.class_weights == "balanced") return o.class_weights;
         std::string s;
         for (float w : parse_class_weights(o.class_weights))
           s += (s.empty() ? "" : ",") + float_roundtrip(w);
         return s;
       },
       [](Options& o, const std::string& s) { o.class_weights = s; }},
      text_setting("--sampling", false, &Options::sampling),
      text_setting("--select", false, &Options::select),
      real_setting("--validation-percent", false, &Options::validation_pct),
      real_setting("--test-percent", false, &Options::test_pct),
  };
  return defs;
}

// What identifies the cache's contents for a resume: images, their hashes, labels, groups,
// class names and how the features were made (weights, preprocessing, precision).
std::string cache_fingerprint(const CacheContents& c) {
  std::string s = c.settings.weights_sha256 + '\n' + c.settings.preprocessing + '\n';
  // fp32 adds nothing, so runs started on caches written before precision existed still resume.
  if (c.settings.precision != "fp32") s += "precision=" + c.settings.precision + '\n';
  // int8: features quantized with other ranges are other features (empty for the others).
  if (!c.settings.calibration.empty()) s += "calibration=" + c.settings.calibration + '\n';
  for (const auto& k : c.class_names) s += k + '\n';
  for (size_t i = 0; i < c.size(); ++i)
    s += c.paths[i] + '\0' + c.sha256[i] + '\0' + std::to_string(c.labels[i]) + '\0' + c.groups[i] +
         '\n';
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// train_settings.csv: flag,value rows (the settings a run was started with; see setting_defs),
// plus cache (path) and cache_fingerprint.
std::map<std::string, std::string> read_settings(const std::string& path) {
  std::map<std::string, std::string> m;
  auto rows = read_csv(path);
  for (size_t i = 1; i < rows.size(); ++i)
    if (rows[i].size() == 2) m[rows[i][0]] = rows[i][1];
  return m;
}

// On a resume: the run's saved settings replace every flag not given now; a flag given with
// another value is refused unless it may change mid-run. Returns the changes made ("--steps 100
// -> 300"). Throws FlagError.
std::vector<std::string> resume_settings(Options& o,
                                         const std::map<std::string, std::string>& saved,
                                         const std::string& settings_path) {
  std::vector<std::string> changed;
  for (const auto& def : setting_defs()) {
    auto it = saved.find(def.flag);
    if (it == saved.end())
      throw FlagError(settings_path + ": no " + def.flag +
                      " value (damaged or from another version): use --restart");
    const std::string now = def.get(o);
    if (!o.given.count(def.flag) || now == it->second) {
      def.set(o, it->second);
      continue;
    }
    if (!def.may_change)
      throw FlagError(std::string(def.flag) + " " + now + ": the checkpoint in " + o.out +
                      " was made with " + def.flag + " " + it->second +
                      ", which cannot change when resuming (only --steps and --eval-every can); "
                      "drop the flag, or use --restart or another --out");
    changed.push_back(std::string(def.flag) + " " + it->second + " -> " + now);
  }
  return changed;
}

std::string settings_csv(const Options& o, const std::string& fingerprint) {
  std::string s = csv_row({"flag", "value"}) + "\n" + csv_row({"--cache", o.cache}) + "\n" +
                  csv_row({"cache_fingerprint", fingerprint}) + "\n";
  for (const auto& def : setting_defs()) s += csv_row({def.flag, def.get(o)}) + "\n";
  return s;
}

// The head's description as trained (from its own config, not the flags).
ReportHead report_head(const HeadConfig& h) {
  ReportHead r;
  r.widths.push_back(h.input);
  r.widths.insert(r.widths.end(), h.hidden.begin(), h.hidden.end());
  r.widths.push_back(h.classes);
  r.dropout = h.dropout;
  return r;
}

int run_train(Options o) {
  // --device: where the head trains (auto: the GPU when one is usable). Not a setting of the run:
  // the checkpoint holds the whole state in a device-independent form and the two devices'
  // steps agree to float rounding (tests/test_head.cpp, teacher-forced), so a run started on
  // one device may resume on the other. "cuda" without a usable GPU is a bad flag (exit 2).
  Device device = Device::CPU;
  try {
    device = resolve_device(o.device);
  } catch (const Error& e) {
    throw FlagError(e.what());
  }
  const std::string ckpt = o.out + "/checkpoint.h5";
  const std::string settings_path = o.out + "/train_settings.csv";
  const bool resuming = !o.restart && fs::exists(ckpt);
  std::map<std::string, std::string> saved;
  std::vector<std::string> changed;
  if (resuming) {  // flags first, before reading the cache
    if (!fs::exists(settings_path))
      throw FlagError(ckpt + " has no " + settings_path +
                      " beside it (made by an older train): use --restart");
    saved = read_settings(settings_path);
    changed = resume_settings(o, saved, settings_path);
  }
  CacheContents c = read_cache(o.cache);
  const std::string fingerprint = cache_fingerprint(c);
  if (resuming) {
    if (saved["cache_fingerprint"] != fingerprint)
      throw FlagError("--cache " + o.cache + ": the checkpoint in " + o.out +
                      " was trained on --cache " + saved["--cache"] + " (contents " +
                      saved["cache_fingerprint"].substr(0, 12) +
                      "), this cache holds other images or features (" + fingerprint.substr(0, 12) +
                      "); use --restart or another --out");
    if (saved["--cache"] != o.cache)
      changed.push_back("--cache " + saved["--cache"] + " -> " + o.cache + " (same contents)");
  }
  const int K = static_cast<int>(c.class_names.size());
  if (K < 2)
    fail(o.cache, ": the cache has ", K,
         " classes; training needs labelled images of >= 2 classes");
  for (size_t i = 0; i < c.size(); ++i)
    if (c.labels[i] < 0)
      fail(o.cache, ": image '", c.paths[i], "' has no label; training needs a labelled cache");
  std::vector<float> explicit_weights;
  if (o.class_weights != "none" && o.class_weights != "balanced") {
    explicit_weights = parse_class_weights(o.class_weights);
    if (static_cast<int>(explicit_weights.size()) != K)
      throw FlagError("--class-weights " + o.class_weights + ": " +
                      std::to_string(explicit_weights.size()) + " values for the " +
                      std::to_string(K) + " classes of " + o.cache);
  }
  const bool grouped = std::any_of(c.groups.begin(), c.groups.end(),
                                   [](const std::string& g) { return !g.empty(); });
  const std::vector<Subset> subsets =
      split_dataset(c.paths, grouped ? c.groups : std::vector<std::string>{}, c.labels,
                    c.class_names, o.validation_pct, o.test_pct);
  const SplitIndices sp = split_indices(subsets, c.labels, K);
  std::vector<int64_t> train_per_class;
  for (const auto& rows : sp.train_by_class)
    train_per_class.push_back(static_cast<int64_t>(rows.size()));

  HeadTrainSettings ts;
  ts.out = o.out;
  ts.steps = o.steps, ts.batch = o.batch, ts.eval_every = o.eval_every;
  ts.sampling = parse_sampling(o.sampling);
  ts.select = parse_select_metric(o.select);
  ts.resume = resuming;
  HeadConfig& cfg = ts.head;
  cfg.input = kCacheFeatureSize;
  cfg.hidden = o.hidden;
  cfg.classes = K;
  cfg.dropout = static_cast<float>(o.dropout);
  cfg.seed = o.seed;
  cfg.optimizer.formula = o.rmsprop == "torch" ? RmsPropFormula::Torch : RmsPropFormula::TF1;
  cfg.optimizer.lr = o.lr;
  cfg.optimizer.rho = o.rho;
  cfg.optimizer.momentum = o.momentum;
  cfg.optimizer.eps = effective_eps(o);
  cfg.optimizer.decay_rate = o.decay_rate;
  cfg.optimizer.decay_steps = o.decay_steps;
  cfg.optimizer.staircase = o.staircase;
  cfg.class_weights =
      o.class_weights == "balanced" ? balanced_class_weights(train_per_class) : explicit_weights;

  if (device == Device::CUDA) {
#ifdef ENGINE_HAVE_CUDA
    // Room for the training batch and evaluation chunks of at least the default size.
    const int64_t max_batch = std::max<int64_t>(o.batch, HeadCuda::kDefaultMaxBatch);
    ts.make_head = [max_batch](const HeadState& st) -> std::unique_ptr<HeadBackend> {
      return std::make_unique<HeadCuda>(st, max_batch);
    };
#endif
  }
  HeadTrainer trainer(ts, c, sp);
  const bool have_val = !sp.validation.empty(), have_test = !sp.test.empty();
  if (resuming) {
    if (o.steps < trainer.step())
      throw FlagError("--steps " + std::to_string(o.steps) + ": the checkpoint in " + o.out +
                      " is already at step " + std::to_string(trainer.step()) +
                      "; give --steps >= " + std::to_string(trainer.step()) + " or use --restart");
    std::printf(
        "resuming from %s at step %ld with its settings (%s); may change: --steps (to extend), "
        "--eval-every\n",
        ckpt.c_str(), static_cast<long>(trainer.step()), settings_path.c_str());
    for (const auto& ch : changed) std::printf("  changed: %s\n", ch.c_str());
  }
  write_file_durable(settings_path, settings_csv(o, fingerprint));
  write_file_durable(o.out + "/split.csv",
                     split_csv(c.paths, c.labels, c.groups, c.class_names, subsets));
  std::printf("cache: %s: %zu images, classes:", o.cache.c_str(), c.size());
  for (int k = 0; k < K; ++k)
    std::printf(" %s=%ld", c.class_names[static_cast<size_t>(k)].c_str(),
                static_cast<long>(train_per_class[static_cast<size_t>(k)]));
  std::printf(" (train); split%s: train %zu, validation %zu, test %zu\n",
              grouped ? " by group" : "", sp.train.size(), sp.validation.size(), sp.test.size());
  std::printf("device: %s%s\n", trainer.device(),
              device == Device::CUDA ? (" (" + cuda_availability().reason + ")").c_str() : "");
  if (!have_val)
    std::printf(
        "no validation split (--validation-percent %g): nothing to select on, the final head is "
        "the last step's\n",
        o.validation_pct);
  std::fflush(stdout);

  Progress progress("train", o.steps, "step");
  progress.set_quiet(o.quiet);
  progress.advance(trainer.step());
  HeadTrainObserver observer;
  observer.on_step = [&](int64_t, float) { progress.advance(1); };
  observer.on_record = [&](const CurvePoint& p, bool) {
    progress.set_note(have_val ? "val " + o.select + " " +
                                     std::to_string(select_value(ts.select, p)).substr(0, 6)
                               : std::string("no validation split"));
  };
  trainer.run(observer);
  progress.finish();
  const int64_t best_step = trainer.best_step();

  HeadCpu final_head = trainer.final_head();
  ClassificationMetrics test =
      have_test ? evaluate_head(final_head, c, sp.test) : ClassificationMetrics{};
  const std::string keras = o.out + "/head_keras.h5";
  // Beside the Keras layers: class names (predict's columns) and the cache's fingerprint and
  // preprocessing (predict must feed the head features made the same way).
  write_keras_head(keras, final_head.config(), final_head.params(),
                   KerasHeadInfo{c.class_names, c.settings.preprocessing, c.settings.weights_sha256,
                                 c.settings.precision, c.settings.calibration});

  const std::string final_desc =
      have_val ? "best validation " + o.select : "last step (no validation split)";
  std::string weights_desc = o.class_weights;
  if (!cfg.class_weights.empty()) {
    weights_desc += " (";
    for (size_t k = 0; k < cfg.class_weights.size(); ++k)
      weights_desc +=
          (k ? ", " : "") + c.class_names[k] + " " + float_roundtrip(cfg.class_weights[k]);
    weights_desc += ")";
  }
  const ReportHead head = report_head(final_head.config());
  std::vector<std::pair<std::string, std::string>> settings = {
      {"cache", o.cache + " (contents " + fingerprint.substr(0, 12) + ")"},
      {"images", std::to_string(c.size())},
      {"classes", std::to_string(K)},
      {"split", "validation " + double_roundtrip(o.validation_pct) + "%, test " +
                    double_roundtrip(o.test_pct) + "%" + (grouped ? ", by group" : "") +
                    ": train " + std::to_string(sp.train.size()) + ", validation " +
                    std::to_string(sp.validation.size()) + ", test " +
                    std::to_string(sp.test.size())},
      {"optimizer", "RMSProp (" + o.rmsprop + "), lr " + double_roundtrip(o.lr) + ", rho " +
                        double_roundtrip(o.rho) + ", momentum " + double_roundtrip(o.momentum) +
                        ", epsilon " + double_roundtrip(effective_eps(o)) + ", decay " +
                        double_roundtrip(o.decay_rate) + " every " + std::to_string(o.decay_steps) +
                        " steps" + (o.staircase ? " (staircase)" : "")},
      {"steps", std::to_string(o.steps) + " x batch " + std::to_string(o.batch) +
                    ", evaluated every " + std::to_string(o.eval_every)},
      {"sampling / class weights", o.sampling + " / " + weights_desc},
      {"final head", "step " + std::to_string(best_step) + " (" + final_desc + ")"},
      {"seed", std::to_string(o.seed)}};
  if (resuming) {
    std::string ch = "resumed with the checkpoint's settings";
    for (size_t i = 0; i < changed.size(); ++i) ch += (i ? "; " : "; changed: ") + changed[i];
    settings.push_back({"resume", ch});
  }
  write_report_html(o.out + "/report.html", "Melanoma head: " + o.cache, trainer.curve(), test,
                    c.class_names, head, settings);
  JsonObject summary;
  summary.integer("best_step", best_step);
  if (have_val)
    summary.string("select", o.select);
  else
    summary.null("select");
  summary.string("final_head", final_desc);
  if (have_test)
    summary.json("test", test.json());
  else
    summary.null("test");
  summary.strings("class_names", c.class_names);
  write_file_durable(o.out + "/metrics.json", summary.str() + "\n");
  std::printf("head: %s, dropout %s (step %ld, %s)\n", layer_widths_text(head.widths).c_str(),
              float_roundtrip(head.dropout).c_str(), static_cast<long>(best_step),
              final_desc.c_str());
  if (have_test) {
    std::printf(
        "test (%ld images, %s, step %ld): AUC %.4f, balanced accuracy %.4f, accuracy %.4f, loss "
        "%.4f\n",
        static_cast<long>(test.n), final_desc.c_str(), static_cast<long>(best_step), test.auc,
        test.balanced_accuracy, test.accuracy, test.loss);
    for (int k = 0; k < K && k < static_cast<int>(test.sensitivity.size()); ++k)
      std::printf("  %-14s sensitivity %.4f specificity %.4f\n",
                  c.class_names[static_cast<size_t>(k)].c_str(),
                  test.sensitivity[static_cast<size_t>(k)],
                  test.specificity[static_cast<size_t>(k)]);
  } else {
    std::printf(
        "test: no test split (--test-percent %g): no test metrics (final head: step %ld, %s)\n",
        o.test_pct, static_cast<long>(best_step), final_desc.c_str());
  }
  std::printf("report: %s/report.html; head: %s; metrics: %s/metrics.json, %s\n", o.out.c_str(),
              keras.c_str(), o.out.c_str(), trainer.metrics_csv_path().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Train the classifier head (default 2048-512-512-K, see --hidden) on a bottleneck cache"};
  Options o;
  app.add_option("--cache", o.cache, "bottleneck cache from tools/extract")->required();
  app.add_option("--out", o.out, "output folder (checkpoints, head, metrics, report)")->required();
  app.add_option("--steps", o.steps,
                 "training steps (may be raised when resuming, to extend a run)")
      ->check(CLI::Range(int64_t(1), int64_t(100000000)));
  app.add_option("--batch", o.batch, "batch size")->check(CLI::Range(int64_t(1), int64_t(65536)));
  app.add_option("--learning-rate", o.lr, "initial learning rate")->check(CLI::PositiveNumber);
  app.add_option("--decay-rate", o.decay_rate, "exponential decay rate, in (0, 1]");
  app.add_option("--decay-steps", o.decay_steps, "decay period in steps (0: constant)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--staircase", o.staircase, "decay in steps (floor)");
  app.add_option("--rmsprop", o.rmsprop, "tf1 (TF RMSPropOptimizer) or torch")
      ->check(CLI::IsMember({"tf1", "torch"}));
  app.add_option("--momentum", o.momentum, "RMSProp momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--rho", o.rho, "RMSProp decay of the mean square")
      ->check(CLI::Range(0.0, 0.9999));
  app.add_option("--epsilon", o.eps, "RMSProp epsilon, > 0 (default 1e-10 tf1, 1e-8 torch)");
  app.add_option("--dropout", o.dropout, "dropout rate")->check(CLI::Range(0.0, 0.95));
  app.add_option("--hidden", o.hidden, "hidden layer sizes")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  app.add_option("--class-weights", o.class_weights,
                 "none, balanced, or w0,w1,... (each > 0, one per class)");
  app.add_option("--sampling", o.sampling, "uniform or balanced")
      ->check(CLI::IsMember({"uniform", "balanced"}));
  app.add_option("--select", o.select, "validation metric for the best checkpoint")
      ->check(CLI::IsMember({"auc", "balanced_accuracy", "accuracy", "loss"}));
  app.add_option("--eval-every", o.eval_every, "evaluate and checkpoint every N steps")
      ->check(CLI::Range(int64_t(1), int64_t(1000000)));
  app.add_option("--validation-percent", o.validation_pct,
                 "validation share (0: no validation, the last step is final)")
      ->check(CLI::Range(0.0, 50.0));
  app.add_option("--test-percent", o.test_pct, "test share (0: no test metrics)")
      ->check(CLI::Range(0.0, 50.0));
  app.add_option("--seed", o.seed, "seed of the weights, dropout and batches");
  app.add_option("--device", o.device,
                 "where the head trains: cpu (default), cuda, or auto (the GPU when usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_flag("--restart", o.restart, "ignore an existing checkpoint");
  app.add_flag("--quiet", o.quiet, "no progress output");
  try {
    app.parse(argc, argv);
    // Checks CLI11 cannot express; all before any work.
    if (!(o.decay_rate > 0 && o.decay_rate <= 1))
      throw CLI::ValidationError(
          "--decay-rate",
          "must be in (0, 1] (1: constant learning rate), got " + double_roundtrip(o.decay_rate));
    if (app.count("--epsilon") && !(o.eps > 0 && std::isfinite(o.eps)))
      throw CLI::ValidationError("--epsilon", "must be > 0, got " + double_roundtrip(o.eps));
    if (o.validation_pct + o.test_pct >= 100)
      throw CLI::ValidationError("--validation-percent + --test-percent", "must be < 100");
    if (o.class_weights != "none" && o.class_weights != "balanced") {
      try {
        parse_class_weights(o.class_weights);
      } catch (const std::invalid_argument& e) {
        throw CLI::ValidationError(e.what());
      }
    }
    for (const auto& def : setting_defs())
      if (app.count(def.flag)) o.given.insert(def.flag);
  } catch (const CLI::ParseError& e) {
    return cli_parse_error_status(app, e);  // --help: 0; a bad flag: one line, 2
  }
  try {
    return run_train(o);
  } catch (const FlagError& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 1;
  }
}
