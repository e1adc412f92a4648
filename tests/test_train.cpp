// tests/test_train.cpp: tools/train end to end. The cache is synthetic and
// written here (closed form: two Gaussian classes in 2048-d with a known separation), so the
// expected quality is known: a separable problem must reach a test AUC near 1, far above chance.
// Also: a run killed with SIGKILL and resumed from its checkpoint ends bit-identical to an
// unbroken run; the head file (read back by models/head_keras.h) holds best.h5's weights; bad
// settings give one-line errors. tools/predict is tested in tests/test_predict.cpp.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/hdf5_io.h"
#include "engine/preprocessing.h"
#include "models/head.h"
#include "models/head_keras.h"
#include "test_util.h"
#include "train_cache.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

const std::string kBin = std::string(ENGINE_BINARY_DIR) + "/tools/";

using engine::test::slurp;
using engine::test::TempDir;
using engine::test::ToolRun;
using engine::test::write_synthetic_cache;

// Runs a tool; when `kill_when` is given, SIGKILLs the process as soon as it returns true
// (polled every 10 ms), so the kill lands at a known stage of the run.
ToolRun run(const std::string& tool, const std::string& args, const TempDir& tmp,
            const std::function<bool()>& kill_when = {}) {
  return engine::test::run_tool(tool, args, tmp, kill_when, SIGKILL);
}

// tools/train on the cache tmp/<cache>, writing tmp/<out>, with further `flags` (may be empty).
ToolRun run_train(const TempDir& tmp, const std::string& cache, const std::string& out,
                  const std::string& flags = "") {
  return run(
      "train",
      "--cache " + (tmp / cache) + " --out " + (tmp / out) + (flags.empty() ? "" : " ") + flags,
      tmp);
}

}  // namespace

TEST(Train, SeparableCacheReachesHighTestAucAndWritesEveryOutput) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 600, 120, 0.25, std::string(64, 'b'));
  ToolRun r = run_train(tmp, "c.h5", "run", "--steps 300 --eval-every 100 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  std::printf("%s", r.out.c_str());
  const std::string js = slurp(tmp / "run/metrics.json");
  const size_t p = js.find("\"auc\": ");
  ASSERT_NE(p, std::string::npos) << js;
  const double auc = std::stod(js.substr(p + 7));
  // Class means differ by 0.25 in 64 dims at noise 0.3: a linear score separates them with
  // d' = 0.25*8/0.3 = 6.7, i.e. AUC ~ 1; anything under 0.95 means training is broken.
  EXPECT_GT(auc, 0.95) << js;
  for (const char* f : {"report.html", "metrics.csv", "metrics.jsonl", "split.csv", "checkpoint.h5",
                        "best.h5", "head_keras.h5"})
    EXPECT_TRUE(fs::exists(tmp / ("run/" + std::string(f)))) << f;
  const std::string html = slurp(tmp / "run/report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("ROC"), std::string::npos);
  const std::string csv = slurp(tmp / "run/metrics.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);  // header + steps 100, 200, 300

  // The Keras head file (models/head_keras.h, read back by its reader): 2048-512-512-2, the
  // cache's class names and fingerprint; its weights equal best.h5's.
  const KerasHead kh = read_keras_head(tmp / "run/head_keras.h5");
  EXPECT_EQ(kh.layer_names, (std::vector<std::string>{"dense_1", "dense_2", "dense_3"}));
  EXPECT_EQ(kh.config.hidden, (std::vector<int64_t>{512, 512}));
  EXPECT_EQ(kh.config.classes, 2);
  EXPECT_EQ(kh.info.class_names, (std::vector<std::string>{"benign", "melanoma"}));
  EXPECT_EQ(kh.info.inception_weights_sha256, std::string(64, 'b'));
  HeadCpu best = HeadCpu::load_state(tmp / "run/best.h5");
  for (int l = 0; l < 3; ++l) {
    Tensor k = best.params().kernel(HeadSection::Params, l);
    ASSERT_EQ(static_cast<int64_t>(kh.kernels[static_cast<size_t>(l)].size()), k.numel());
    EXPECT_EQ(0, std::memcmp(kh.kernels[static_cast<size_t>(l)].data(), k.data(),
                             sizeof(float) * k.numel()))
        << l;
  }
}

// The widths a run states (console and report.html) are the head's own, as head_keras.h5 reads
// back: --hidden 64 32 16 on a 3-class cache is 2048 -> 64 -> 32 -> 16 -> 3, not the default.
TEST(Train, ReportStatesTheHeadTrained) {
  TempDir tmp;
  write_synthetic_cache(tmp / "two.h5", 600, 120, 0.25, std::string(64, 'b'));
  CacheContents c = read_cache(tmp / "two.h5");
  c.class_names = {"benign", "nevus", "melanoma"};
  int benign = 0;
  for (auto& l : c.labels) l = l == 1 ? 2 : (benign++ % 3 == 0 ? 1 : 0);
  write_cache_atomic(tmp / "c.h5", c);
  ToolRun r = run_train(tmp, "c.h5", "run", "--hidden 64 32 16 --steps 50 --eval-every 50 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  const KerasHead kh = read_keras_head(tmp / "run/head_keras.h5");
  std::vector<int64_t> want{kh.config.input};
  want.insert(want.end(), kh.config.hidden.begin(), kh.config.hidden.end());
  want.push_back(kh.config.classes);
  EXPECT_EQ(want, (std::vector<int64_t>{2048, 64, 32, 16, 3}));
  // The numbers after "head: " on the console, and after "Head: Dense " in the report.
  auto widths_after = [](const std::string& text, const std::string& key,
                         const std::string& arrow) {
    std::vector<int64_t> w;
    size_t p = text.find(key);
    if (p == std::string::npos) return w;
    p += key.size();
    for (;;) {
      char* end = nullptr;
      w.push_back(std::strtoll(text.c_str() + p, &end, 10));
      p = static_cast<size_t>(end - text.c_str());
      if (text.compare(p, arrow.size(), arrow) != 0) return w;
      p += arrow.size();
    }
  };
  EXPECT_EQ(widths_after(r.out, "head: ", " -> "), want) << r.out;
  EXPECT_EQ(widths_after(slurp(tmp / "run/report.html"), "Head: Dense ", " -&gt; "), want);
}

TEST(Train, KilledAndResumedEqualsUnbroken) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 400, 80, 0.2, std::string(64, 'b'));
  const std::string common =
      "--cache " + (tmp / "c.h5") + " --hidden 64 64 --steps 300 --eval-every 50 --quiet --out ";
  ASSERT_EQ(run("train", common + (tmp / "a"), tmp).status, 0);
  // Kill once after the first checkpoint and once after the third evaluation row, mid-run.
  auto rows = [&] {
    const std::string m = slurp(tmp / "b/metrics.csv");
    return std::count(m.begin(), m.end(), '\n') - 1;
  };
  EXPECT_EQ(
      run("train", common + (tmp / "b"), tmp, [&] { return fs::exists(tmp / "b/checkpoint.h5"); })
          .status,
      -SIGKILL);
  EXPECT_EQ(run("train", common + (tmp / "b"), tmp, [&] { return rows() >= 3; }).status, -SIGKILL);
  ToolRun done = run("train", common + (tmp / "b"), tmp);
  ASSERT_EQ(done.status, 0) << done.err;
  EXPECT_NE(done.out.find("resuming from"), std::string::npos) << done.out;
  H5File a = H5File::open_read(tmp / "a/head_keras.h5"),
         b = H5File::open_read(tmp / "b/head_keras.h5");
  for (const char* d :
       {"/model_weights/dense_1/dense_1/kernel:0", "/model_weights/dense_2/dense_2/kernel:0",
        "/model_weights/dense_3/dense_3/bias:0"}) {
    auto x = h5_read_float_array(a.id(), d, a.path()), y = h5_read_float_array(b.id(), d, b.path());
    EXPECT_EQ(x.data, y.data) << d << " differs after kill + resume";
  }
  EXPECT_EQ(slurp(tmp / "a/metrics.csv"), slurp(tmp / "b/metrics.csv"));
  EXPECT_EQ(slurp(tmp / "a/metrics.json"), slurp(tmp / "b/metrics.json"));
}

TEST(Train, BadInputGivesOneLine) {
  TempDir tmp;
  write_synthetic_cache(tmp / "tiny.h5", 100, 50, 0.2, std::string(64, 'b'));
  // Few images: a 45% validation + 45% test split of 100 leaves a class without train images
  // with high probability; either way we ask for a split that cannot be filled by 1 melanoma.
  CacheContents one = read_cache(tmp / "tiny.h5");
  for (auto& l : one.labels) l = 0;
  one.labels[0] = 1;
  write_cache_atomic(tmp / "one.h5", one);
  ToolRun r = run_train(tmp, "one.h5", "r", "--steps 10");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("class 'melanoma' has 1 images"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(run_train(tmp, "nope.h5", "r").status, 1);
  EXPECT_EQ(run_train(tmp, "one.h5", "r", "--steps -5").status, 2);
  EXPECT_EQ(run_train(tmp, "one.h5", "r", "--rmsprop adam").status, 2);
}

// tools/predict (numbers vs numpy on extracted features, ids, errors): tests/test_predict.cpp.

// ---------------------------------------------------------------------------------------------
// No validation / test split, resume settings, escaping, flags.
// ---------------------------------------------------------------------------------------------

namespace {

// Runs a python3 (Debian's, real json/csv parsers) script; returns its status and output.
ToolRun python(const std::string& script, const std::string& args, const TempDir& tmp) {
  { std::ofstream(tmp / "check.py") << script; }
  const std::string cmd =
      "/usr/bin/python3 " + (tmp / "check.py") + " " + args + " > " + (tmp / "py.txt") + " 2>&1";
  const int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(tmp / "py.txt"), ""};
}

int64_t lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

}  // namespace

TEST(Train, NoValidationSplitFinalIsLastStepAndMetricsAreEmptyNotZero) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 400, 80, 0.25, std::string(64, 'b'));
  ToolRun r =
      run_train(tmp, "c.h5", "run",
                "--hidden 64 64 --steps 300 --eval-every 100 --validation-percent 0 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("no validation split"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("last step"), std::string::npos) << r.out;
  // The final head is the last step's: best.h5 holds the same parameters as the checkpoint.
  HeadState best = head_load_state(tmp / "run/best.h5"),
            last = head_load_state(tmp / "run/checkpoint.h5");
  EXPECT_EQ(best.step, 300);
  EXPECT_EQ(best.params, last.params);
  ToolRun py = python(R"(
import csv, json, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(d + "/metrics.csv", newline="")))
assert [r["step"] for r in rows] == ["100", "200", "300"], rows
for r in rows:
    assert float(r["train_loss"]) > 0, r
    for k in ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc"):
        assert r[k] == "", (k, r)
for line in open(d + "/metrics.jsonl"):
    o = json.loads(line)
    assert o["val_auc"] is None and o["val_loss"] is None and o["train_loss"] > 0, o
m = json.load(open(d + "/metrics.json"))
assert m["best_step"] == 300 and m["select"] is None, m
assert "last step" in m["final_head"], m
assert m["test"]["n"] > 0 and m["test"]["auc"] > 0.5, m
print("ok")
)",
                      tmp / "run", tmp);
  EXPECT_EQ(py.status, 0) << py.out;
  const std::string html = slurp(tmp / "run/report.html");
  EXPECT_NE(html.find("No validation split"), std::string::npos);
  EXPECT_NE(html.find("step 300 (last step"), std::string::npos);

  // No test split: said so, and null test metrics.
  ToolRun t = run_train(tmp, "c.h5", "t", "--hidden 64 64 --steps 100 --test-percent 0 --quiet");
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("no test split"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find("AUC"), std::string::npos) << t.out;
  ToolRun py2 = python(R"(
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
assert m["test"] is None and m["select"] == "auc" and m["best_step"] == 100, m
print("ok")
)",
                       tmp / "t", tmp);
  EXPECT_EQ(py2.status, 0) << py2.out;
  EXPECT_NE(slurp(tmp / "t/report.html").find("No test split"), std::string::npos);
}

TEST(Train, ResumeRefusesFixedSettingsAndUsesTheCheckpoints) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 400, 80, 0.2, std::string(64, 'b'));
  write_synthetic_cache(tmp / "other.h5", 300, 60, 0.2, std::string(64, 'b'));
  const std::string base =
      "--cache " + (tmp / "c.h5") + " --out " + (tmp / "b") + " --hidden 64 64 --quiet";
  ASSERT_EQ(run("train", base + " --learning-rate 0.001 --steps 100 --eval-every 50", tmp).status,
            0);
  const std::string split_before = slurp(tmp / "b/split.csv"),
                    csv_before = slurp(tmp / "b/metrics.csv");
  struct Refused {
    std::string flags, flag, old_value, new_value;
  };
  const std::vector<Refused> refused = {
      {"--learning-rate 0.5 --rmsprop torch", "--rmsprop", "tf1", "torch"},
      {"--learning-rate 0.5", "--learning-rate", "0.001", "0.5"},
      {"--batch 64", "--batch", "128", "64"},
      {"--sampling balanced", "--sampling", "uniform", "balanced"},
      {"--select loss", "--select", "auc", "loss"},
      {"--class-weights 1,2", "--class-weights", "none", "1,2"},
      {"--class-weights balanced", "--class-weights", "none", "balanced"},
      {"--validation-percent 20", "--validation-percent", "10", "20"},
      {"--test-percent 5", "--test-percent", "10", "5"},
      {"--seed 5", "--seed", "1", "5"},
      {"--dropout 0.2", "--dropout", "0.5", "0.2"},
      {"--hidden 32 32", "--hidden", "64 64", "32 32"},
      {"--decay-rate 0.5", "--decay-rate", "0.9", "0.5"},
      {"--decay-steps 10", "--decay-steps", "1000", "10"},
      {"--staircase", "--staircase", "false", "true"},
      {"--momentum 0.5", "--momentum", "0", "0.5"},
      {"--rho 0.5", "--rho", "0.9", "0.5"},
      {"--epsilon 1e-5", "--epsilon", "1e-10", "1e-05"},
  };
  for (const auto& c : refused) {
    // (--hidden is a list: given twice it would append, so that case replaces base's --hidden.)
    const std::string args =
        c.flag == "--hidden" ? "--cache " + (tmp / "c.h5") + " --out " + (tmp / "b") + " --quiet"
                             : base;
    ToolRun r = run("train", args + " --steps 200 " + c.flags, tmp);
    EXPECT_EQ(r.status, 2) << c.flags << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(c.flag + " " + c.new_value), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.flag + " " + c.old_value + ","), std::string::npos) << r.err;
  }
  // Another cache (other contents) is refused; the split and the curve are untouched.
  ToolRun oc = run_train(tmp, "other.h5", "b", "--steps 200 --quiet");
  EXPECT_EQ(oc.status, 2) << oc.err;
  EXPECT_EQ(lines(oc.err), 1) << oc.err;
  EXPECT_NE(oc.err.find("--cache"), std::string::npos) << oc.err;
  EXPECT_NE(oc.err.find("c.h5"), std::string::npos) << oc.err;
  ToolRun low = run("train", base + " --steps 50", tmp);
  EXPECT_EQ(low.status, 2) << low.err;
  EXPECT_NE(low.err.find("already at step 100"), std::string::npos) << low.err;
  EXPECT_EQ(slurp(tmp / "b/split.csv"), split_before);
  EXPECT_EQ(slurp(tmp / "b/metrics.csv"), csv_before);

  // Extending: only --steps (and --eval-every) given; the rest comes from the checkpoint,
  // including the learning rate 0.001 given at the start (not the default 1e-4). The result
  // equals an unbroken 200-step run with the same settings.
  ToolRun ext = run("train", base + " --steps 200 --eval-every 25", tmp);
  ASSERT_EQ(ext.status, 0) << ext.err;
  EXPECT_NE(ext.out.find("resuming from"), std::string::npos) << ext.out;
  EXPECT_NE(ext.out.find("changed: --steps 100 -> 200"), std::string::npos) << ext.out;
  EXPECT_NE(ext.out.find("changed: --eval-every 50 -> 25"), std::string::npos) << ext.out;
  const std::string html = slurp(tmp / "b/report.html");
  EXPECT_NE(html.find("lr 0.001,"), std::string::npos);
  EXPECT_NE(html.find("200 x batch 128"), std::string::npos);
  EXPECT_NE(html.find("changed: --steps 100 -&gt; 200"), std::string::npos);
  const std::string m = slurp(tmp / "b/metrics.csv");
  EXPECT_EQ(lines(m), 1 + 2 + 4) << m;  // 50, 100, then 125, 150, 175, 200
  ToolRun same = run_train(
      tmp, "c.h5", "u", "--hidden 64 64 --quiet --learning-rate 0.001 --steps 200 --eval-every 50");
  ASSERT_EQ(same.status, 0) << same.err;
  // Selection by validation AUC may pick other steps in the two runs (other eval points), so
  // compare the last checkpoints: same settings, same steps -> bit-identical.
  EXPECT_EQ(head_load_state(tmp / "u/checkpoint.h5").params,
            head_load_state(tmp / "b/checkpoint.h5").params);
  // Repeating the original command (same explicit flags) resumes without complaint.
  ToolRun rep = run("train", base + " --learning-rate 0.001 --steps 200 --eval-every 25", tmp);
  EXPECT_EQ(rep.status, 0) << rep.err;
  // --restart starts over with the new settings.
  ToolRun rs = run("train", base + " --steps 60 --learning-rate 0.002 --restart", tmp);
  ASSERT_EQ(rs.status, 0) << rs.err;
  EXPECT_EQ(head_load_state(tmp / "b/checkpoint.h5").step, 60);
  EXPECT_NE(slurp(tmp / "b/report.html").find("lr 0.002,"), std::string::npos);
}

TEST(Train, ClassNamesAndPathsWithCommasAndQuotesGiveValidCsvAndJson) {
  TempDir tmp;
  write_synthetic_cache(tmp / "plain.h5", 400, 80, 0.25, std::string(64, 'b'));
  CacheContents c = read_cache(tmp / "plain.h5");
  c.class_names = {"nevus, \"atypical\"", "mel\\anoma\t\"x\""};
  for (auto& p : c.paths) p = "A,b \"q\"/" + p;  // same prefix: still sorted
  write_cache_atomic(tmp / "c.h5", c);
  ToolRun r = run_train(tmp, "c.h5", "run", "--hidden 64 64 --steps 100 --eval-every 50 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  ToolRun py = python(R"(
import csv, json, sys
d = sys.argv[1]
names = ['nevus, "atypical"', 'mel\\anoma\t"x"']
m = json.load(open(d + "/metrics.json"))
assert m["class_names"] == names, m["class_names"]
rows = list(csv.reader(open(d + "/split.csv", newline="")))
assert rows[0] == ["path", "label", "group", "subset"], rows[0]
assert len(rows) == 401 and all(len(r) == 4 for r in rows), [r for r in rows if len(r) != 4][:3]
assert {r[1] for r in rows[1:]} == set(names)
assert all(r[0].startswith('A,b "q"/') for r in rows[1:]), rows[1]
assert {r[3] for r in rows[1:]} == {"train", "validation", "test"}
mc = list(csv.reader(open(d + "/metrics.csv", newline="")))
assert len(mc) == 3 and all(len(r) == 6 for r in mc), mc
for line in open(d + "/metrics.jsonl"):
    json.loads(line)
st = dict(csv.reader(open(d + "/train_settings.csv", newline="")))
assert st["--steps"] == "100" and len(st["cache_fingerprint"]) == 64, st
print("ok")
)",
                      tmp / "run", tmp);
  EXPECT_EQ(py.status, 0) << py.out;
}

// Bad flags of every tool: one line on stderr, status 2, before any work (no output folder);
// --help: status 0.
TEST(Tools, BadFlagsGiveOneLineAndStatus2) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 100, 20, 0.2, std::string(64, 'b'));
  const std::string train =
      "--cache " + (tmp / "c.h5") + " --out " + (tmp / "never") + " --steps 10 --quiet ";
  const std::string extract =
      "--images " + engine::test::reference_file("dataset/classes") + " --weights " +
      engine::test::reference_file("inception_v3_1based.h5") + " --out " + (tmp / "never.h5") + " ";
  struct Case {
    std::string tool, args, expect;  // expect: a fragment of the one line
  };
  const std::vector<Case> cases = {
      {"train", train + "--class-weights abc,1", "--class-weights"},
      {"train", train + "--class-weights 1,2x", "'2x'"},
      {"train", train + "--class-weights -1,2", "> 0"},
      {"train", train + "--class-weights 0,1", "> 0"},
      {"train", train + "--class-weights 1,", "--class-weights"},
      {"train", train + "--class-weights 1,2,3", "3 values for the 2 classes"},
      {"train", train + "--decay-rate 0", "--decay-rate"},
      {"train", train + "--decay-rate 1.5", "--decay-rate"},
      {"train", train + "--epsilon 0", "--epsilon"},
      {"train", train + "--epsilon -1e-8", "--epsilon"},
      {"train", train + "--validation-percent 50 --test-percent 50", "< 100"},
      {"train", train + "--batch 0", "--batch"},
      {"train", train + "--bogus", "bogus"},
      {"extract", extract + "--shard 0/2", "--shard"},
      {"extract", extract + "--shard 3/2", "--shard"},
      {"extract", extract + "--shard 1/2x", "--shard"},
      {"extract", extract + "--shard x", "--shard"},
      {"extract", extract + "--shard 1/0", "--shard"},
      {"extract", extract + "--batch 0", "--batch"},
      {"make_demo_data", "--out " + (tmp / "never") + " --count 1", "--count"},
      {"make_demo_data", "--count 5", "--out"},
      {"inception_forward",
       "--weights " + engine::test::reference_file("inception_v3_1based.h5") + " --batch 0",
       "--batch"},
      {"inception_forward", "--images 3", "--weights"},
  };
  for (const auto& c : cases) {
    ToolRun r = run(c.tool, c.args, tmp);
    EXPECT_EQ(r.status, 2) << c.tool << " " << c.args << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << c.tool << " " << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.tool << " " << c.args << ": " << r.err;
    EXPECT_EQ(r.err.find(".cpp"), std::string::npos) << "internal check leaked: " << r.err;
    EXPECT_FALSE(fs::exists(tmp / "never")) << c.tool << " " << c.args;
    EXPECT_FALSE(fs::exists(tmp / "never.h5")) << c.tool << " " << c.args;
  }
  for (const char* tool : {"train", "extract", "make_demo_data", "inception_forward"}) {
    ToolRun h = run(tool, "--help", tmp);
    EXPECT_EQ(h.status, 0) << tool;
    EXPECT_NE(h.out.find("--"), std::string::npos) << tool << ": " << h.out;
  }
  // A valid --epsilon is used as given (not replaced by the default).
  ToolRun e =
      run_train(tmp, "c.h5", "e",
                "--steps 5 --quiet --epsilon 0.001 --validation-percent 20 --test-percent 20");
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_EQ(head_load_state(tmp / "e/checkpoint.h5").config.optimizer.eps, 0.001);
}

// The cache's feature precision is part of what a run resumes on: the same images re-extracted
// in tf32 (other features) are refused like another cache; fp32 adds nothing to the fingerprint,
// so runs begun on caches written before precision was recorded still resume.
TEST(Train, ResumeRefusesTheSameImagesAtAnotherPrecision) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 200, 40, 0.2, std::string(64, 'b'));
  ASSERT_EQ(run_train(tmp, "c.h5", "r", "--hidden 16 --steps 20 --eval-every 10 --quiet").status,
            0);
  CacheContents c = read_cache(tmp / "c.h5");
  ASSERT_EQ(c.settings.precision, "fp32");
  write_cache_atomic(tmp / "c.h5", c);  // rewritten unchanged: still resumes
  ToolRun same = run_train(tmp, "c.h5", "r", "--hidden 16 --steps 30 --eval-every 10 --quiet");
  EXPECT_EQ(same.status, 0) << same.err;
  c.settings.precision = "tf32";
  write_cache_atomic(tmp / "c.h5", c);
  ToolRun r = run_train(tmp, "c.h5", "r", "--hidden 16 --steps 40 --eval-every 10 --quiet");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--cache"), std::string::npos) << r.err;
}
