// tests/test_predict.cpp: the Keras head file (models/head_keras.h) and tools/predict, by numbers.
//  - Round trip: heads with random weights and biases (hidden {512,512}, {64}, {64,32,16}; K = 2,
//    3) written and read back are bit-identical and predict bit-identically; bad files give one
//    line naming the file and the dataset or attribute.
//  - Keras judge (tests/reference/keras_head.py, ENGINE_KERAS_PYTHON; FAILS when missing):
//    tf_keras load_model opens our file and predicts what HeadCpu predicts; a head Keras saved
//    itself (model.save + our attributes) is read by our reader and predicts what Keras does.
//  - predict end to end: tools/extract caches the features of a few images (random Inception
//    weights from the reference fixture), heads are trained by tools/train (--hidden 64,
//    --hidden 64 32 16) or written, tools/predict classifies the same images, and numpy
//    (tests/reference/apply_head.py, /usr/bin/python3) applied to the cached features must give
//    the CSV's probabilities; the CSV is parsed by Python's csv module (ids with commas, quotes,
//    dots). Duplicate ids, an unusable --out, bad flags (--precision fp16 on the CPU), --help,
//    SIGTERM mid-run. With a GPU (skipped without one, failing under ENGINE_REQUIRE_GPU=1):
//    --device cuda gives the CPU run's probabilities within the tolerance the fp32 feature error
//    allows, and --precision tf32 against an fp32 head warns in one line.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/preprocessing.h"
#include "models/head.h"
#include "models/head_keras.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

const std::string kBin = std::string(ENGINE_BINARY_DIR) + "/tools/";
const std::string kRefScripts = std::string(ENGINE_SOURCE_DIR) + "/tests/reference/";
std::string weights() { return engine::test::reference_file("inception_v3_1based.h5"); }

using engine::test::error_of;
using engine::test::slurp;
using engine::test::TempDir;
using engine::test::ToolRun;

// Runs a shell command line; when `signal_when` is given, sends `sig` as soon as it returns true
// (polled every 10 ms).
ToolRun run_cmd(const std::string& cmdline, const TempDir& tmp,
                const std::function<bool()>& signal_when = {}, int sig = SIGTERM) {
  return engine::test::run_command(cmdline, tmp, signal_when, sig);
}
ToolRun run(const std::string& tool, const std::string& args, const TempDir& tmp,
            const std::function<bool()>& signal_when = {}) {
  return run_cmd(kBin + tool + " " + args, tmp, signal_when);
}
std::string q(const std::string& s) { return "'" + s + "'"; }  // our temp paths hold no quote

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// Files in `dir` whose name starts with `prefix`.
std::vector<std::string> files_starting(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0)
      v.push_back(e.path().filename().string());
  return v;
}

// A head with Glorot kernels (seeded) and random non-zero biases, so biases are tested too.
HeadCpu random_head(std::vector<int64_t> hidden, int64_t classes, uint64_t seed,
                    float kernel_scale = 1.f) {
  HeadConfig c;
  c.hidden = std::move(hidden);
  c.classes = classes;
  c.seed = seed;
  HeadCpu h(c);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.f, 0.1f);
  for (size_t l = 0; l < h.params().layout().layers.size(); ++l) {
    Tensor k = h.params().kernel(HeadSection::Params, static_cast<int>(l));
    std::vector<float> kv(k.data(), k.data() + k.numel());
    for (float& v : kv) v *= kernel_scale;
    std::vector<float> b(static_cast<size_t>(h.params().layout().layers[l].out));
    for (float& v : b) v = g(rng);
    h.set_layer(static_cast<int>(l), kv.data(), b.data());
  }
  return h;
}

KerasHeadInfo info_for(int64_t classes) {
  KerasHeadInfo info;
  for (int64_t k = 0; k < classes; ++k) info.class_names.push_back("class " + std::to_string(k));
  info.class_names[0] = "benign, \"nevus\" \xC3\xA9";  // comma, quotes, UTF-8 survive
  info.preprocessing = Preprocessing::for_resize(ResizeFilter::Antialias, true).key();
  info.inception_weights_sha256 = std::string(64, 'd');
  return info;
}

std::vector<float> random_features(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * kCacheFeatureSize));
  for (float& v : x) v = std::max(0.f, 1.5f * u(rng) - 0.3f);  // post-ReLU-like, some zeros
  return x;
}

void write_dataset(hid_t loc, const std::string& name, const std::vector<float>& v, hsize_t rows,
                   hsize_t cols) {
  h5_write_floats(loc, name, v.data(), {rows, cols}, "test file");
}

void replace_string_attr(const std::string& file, const std::string& name,
                         const std::string& value) {
  H5File f = H5File::open_rw(file);
  h5_delete_attr(f.id(), name, file);
  h5_write_string_attr(f.id(), name, value, file);
  f.close();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The file format, in C++
// ---------------------------------------------------------------------------------------------
TEST(HeadKeras, RoundTripIsBitIdentical) {
  TempDir tmp;
  const std::vector<float> x = random_features(37, 5);
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> cases = {
      {{512, 512}, 2}, {{512, 512}, 3}, {{64}, 2}, {{64}, 3}, {{64, 32, 16}, 2}, {{64, 32, 16}, 3}};
  uint64_t seed = 11;
  for (const auto& [hidden, K] : cases) {
    SCOPED_TRACE("hidden " + std::to_string(hidden.size()) + " layers, K " + std::to_string(K));
    HeadCpu h = random_head(hidden, K, seed++);
    const KerasHeadInfo info = info_for(K);
    const std::string path = tmp / "head.h5";
    write_keras_head(path, h.config(), h.params(), info);
    EXPECT_EQ(files_starting(tmp.path(), "head.h5.tmp").size(), 0u) << "temp file left behind";
    const KerasHead r = read_keras_head(path);
    EXPECT_EQ(r.config.input, 2048);
    EXPECT_EQ(r.config.hidden, hidden);
    EXPECT_EQ(r.config.classes, K);
    EXPECT_EQ(r.info.class_names, info.class_names);
    EXPECT_EQ(r.info.preprocessing, info.preprocessing);
    EXPECT_EQ(r.info.inception_weights_sha256, info.inception_weights_sha256);
    ASSERT_EQ(r.kernels.size(), hidden.size() + 1);
    for (size_t l = 0; l < r.kernels.size(); ++l) {
      EXPECT_EQ(r.layer_names[l], "dense_" + std::to_string(l + 1));
      Tensor k = h.params().kernel(HeadSection::Params, static_cast<int>(l));
      Tensor b = h.params().bias(HeadSection::Params, static_cast<int>(l));
      ASSERT_EQ(static_cast<int64_t>(r.kernels[l].size()), k.numel());
      ASSERT_EQ(static_cast<int64_t>(r.biases[l].size()), b.numel());
      EXPECT_EQ(0, std::memcmp(r.kernels[l].data(), k.data(), sizeof(float) * k.numel()))
          << "kernel " << l;
      EXPECT_EQ(0, std::memcmp(r.biases[l].data(), b.data(), sizeof(float) * b.numel()))
          << "bias " << l;
    }
    HeadCpu back = r.to_cpu();
    std::vector<float> p0(37 * K), p1(37 * K);
    h.predict(x.data(), 37, p0.data());
    back.predict(x.data(), 37, p1.data());
    EXPECT_EQ(0, std::memcmp(p0.data(), p1.data(), sizeof(float) * p0.size()))
        << "predictions differ";
  }
}

TEST(HeadKeras, BadFilesGiveOneLineNamingTheDataset) {
  TempDir tmp;
  HeadCpu h = random_head({64, 32}, 2, 3);
  const std::string path = tmp / "head.h5";
  auto fresh = [&] { write_keras_head(path, h.config(), h.params(), info_for(2)); };
  fresh();
  // A kernel of the wrong shape.
  {
    H5File f = H5File::open_rw(path);
    h5_delete_link(f.id(), "/model_weights/dense_2/dense_2/kernel:0", path);
    H5Id g = h5_open_group(f.id(), "/model_weights/dense_2/dense_2", path);
    write_dataset(g.get(), "kernel:0", std::vector<float>(63 * 32), 63, 32);
  }
  std::string e = error_of([&] { read_keras_head(path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("/model_weights/dense_2/dense_2/kernel:0"), std::string::npos) << e;
  EXPECT_NE(e.find("(64, out)"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // A model_config whose layers compute something else.
  fresh();
  std::string mc = h5_read_string_attr(H5File::open_read(path).id(), "model_config", path);
  const size_t at = mc.find("\"relu\"");
  ASSERT_NE(at, std::string::npos);
  replace_string_attr(path, "model_config", mc.substr(0, at) + "\"tanh\"" + mc.substr(at + 6));
  e = error_of([&] { read_keras_head(path); });
  EXPECT_NE(e.find("model_config"), std::string::npos) << e;
  EXPECT_NE(e.find("'tanh', expected 'relu'"), std::string::npos) << e;
  // Class names that do not match the outputs; a missing file.
  fresh();
  {
    H5File f = H5File::open_rw(path);
    h5_delete_attr(f.id(), "class_names", path);
  }
  e = error_of([&] { read_keras_head(path); });
  EXPECT_NE(e.find("missing attribute 'class_names'"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { read_keras_head(tmp / "nope.h5"); }).find("nope.h5"), std::string::npos);
  // The writer refuses a class-name count that does not match, and leaves nothing behind.
  KerasHeadInfo three = info_for(3);
  e = error_of([&] { write_keras_head(tmp / "x.h5", h.config(), h.params(), three); });
  EXPECT_NE(e.find("3 class names for a head with 2 outputs"), std::string::npos) << e;
  EXPECT_EQ(files_starting(tmp.path(), "x.h5").size(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Keras as the judge
// ---------------------------------------------------------------------------------------------
TEST(HeadKeras, KerasLoadsOursAndWeReadKerasOwn) {
  const std::string py = ENGINE_KERAS_PYTHON_EXE;
  ASSERT_TRUE(fs::exists(py))
      << "ENGINE_KERAS_PYTHON " << py
      << " does not exist: run scripts/keras_env.sh or set -DENGINE_KERAS_PYTHON";
  TempDir tmp;
  const int64_t n = 64;
  const std::vector<float> x = random_features(n, 21);
  std::string args;
  // Ours, judged by Keras. Kernel scale 0.5 keeps the softmax off saturation so the comparison
  // is of numbers that move with the weights (probabilities mostly inside (0.01, 0.99)).
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> ours = {
      {{512, 512}, 2}, {{64}, 3}, {{64, 32, 16}, 2}};
  for (size_t i = 0; i < ours.size(); ++i) {
    HeadCpu h = random_head(ours[i].first, ours[i].second, 100 + i, 0.5f);
    const std::string head = tmp / ("ours" + std::to_string(i) + ".h5"),
                      data = tmp / ("ours" + std::to_string(i) + "_data.h5");
    write_keras_head(head, h.config(), h.params(), info_for(ours[i].second));
    std::vector<float> p(static_cast<size_t>(n * ours[i].second));
    h.predict(x.data(), n, p.data());
    H5File f = H5File::create(data);
    write_dataset(f.id(), "features", x, n, kCacheFeatureSize);
    write_dataset(f.id(), "ours", p, n, static_cast<hsize_t>(ours[i].second));
    args += " --judge " + q(head) + " " + q(data);
  }
  // Keras's own files: 2048-64-32-16-3 and 2048-512-512-2.
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> theirs = {{{64, 32, 16}, 3},
                                                                        {{512, 512}, 2}};
  for (size_t i = 0; i < theirs.size(); ++i) {
    const std::string data = tmp / ("keras" + std::to_string(i) + "_data.h5");
    H5File f = H5File::create(data);
    write_dataset(f.id(), "features", x, n, kCacheFeatureSize);
    args += " --make " + q(tmp / ("keras" + std::to_string(i) + ".h5")) + " " + q(data) + " " +
            std::to_string(7 + i) + " " + std::to_string(theirs[i].second);
    for (int64_t u : theirs[i].first) args += " " + std::to_string(u);
  }
  // Tolerance 1e-5 abs: both sides are float32 Dense layers (GEMMs of length 2048, 512, ...)
  // summed in different orders (oneDNN/Eigen vs our kernel); the logits differ by a few float32
  // ulps (~1e-6 relative) and a softmax probability moves by at most 1/4 of a logit change.
  ToolRun r = run_cmd(py + " " + kRefScripts + "keras_head.py --atol 1e-5" + args, tmp);
  std::printf("%s", r.out.c_str());
  ASSERT_EQ(r.status, 0) << r.out << r.err.substr(r.err.size() > 3000 ? r.err.size() - 3000 : 0);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 5) << r.out;

  for (size_t i = 0; i < theirs.size(); ++i) {
    SCOPED_TRACE("keras-written head " + std::to_string(i));
    const KerasHead kh = read_keras_head(tmp / ("keras" + std::to_string(i) + ".h5"));
    EXPECT_EQ(kh.config.hidden, theirs[i].first);
    EXPECT_EQ(kh.config.classes, theirs[i].second);
    EXPECT_EQ(kh.info.class_names.size(), static_cast<size_t>(theirs[i].second));
    HeadCpu h = kh.to_cpu();
    std::vector<float> p(static_cast<size_t>(n * theirs[i].second));
    h.predict(x.data(), n, p.data());
    H5File d = H5File::open_read(tmp / ("keras" + std::to_string(i) + "_data.h5"));
    const auto want = h5_read_float_checked(d.id(), "keras", Shape{n, theirs[i].second}, d.path());
    EXPECT_TRUE(engine::test::tensors_close(p.data(), want.data(), static_cast<int64_t>(p.size()),
                                            1e-5, 0, "ours vs keras on keras's file"));
    std::printf("keras-written 2048-...-%lld: %s\n", static_cast<long long>(theirs[i].second),
                engine::test::tensors_close(p.data(), want.data(), static_cast<int64_t>(p.size()),
                                            1e-5, 0, "ours vs keras")
                    .message());
  }
}

// ---------------------------------------------------------------------------------------------
// tools/predict
// ---------------------------------------------------------------------------------------------
namespace {

// Copies a few reference images under names that test ids and CSV quoting.
void make_images(const TempDir& tmp, const std::string& root) {
  const std::string src = engine::test::reference_file("dataset/classes");
  std::vector<std::string> ben, mel;
  for (const auto& e : fs::directory_iterator(src + "/benign")) ben.push_back(e.path().string());
  for (const auto& e : fs::directory_iterator(src + "/melanoma")) mel.push_back(e.path().string());
  std::sort(ben.begin(), ben.end());
  std::sort(mel.begin(), mel.end());
  ASSERT_GE(ben.size(), 3u);
  ASSERT_GE(mel.size(), 2u);
  fs::create_directories(root + "/benign");
  fs::create_directories(root + "/melanoma");
  fs::copy_file(ben[0], root + "/benign/" + fs::path(ben[0]).filename().string());
  fs::copy_file(ben[1], root + "/benign/img.v1.jpg");
  fs::copy_file(ben[2], root + "/benign/A,b.JPG");
  fs::copy_file(mel[0], root + "/melanoma/q\"uote.png");
  fs::copy_file(mel[1], root + "/melanoma/scan.v2");  // no image extension: the id stays whole
  (void)tmp;
}

// A synthetic training cache with the extracted cache's settings (so predict accepts the head).
void write_training_cache(const std::string& path, const CacheSettings& s) {
  CacheContents c;
  c.settings = s;
  c.class_names = {"benign", "melanoma"};
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g(0.f, 1.f);
  for (int i = 0; i < 300; ++i) {
    char name[40];
    std::snprintf(name, sizeof name, "ISIC_%07d.jpg", i);
    c.paths.push_back(name);
    c.sha256.push_back(std::string(64, 'a'));
    c.groups.push_back("");
    const bool m = i % 5 == 0;
    c.labels.push_back(m ? 1 : 0);
    for (int d = 0; d < kCacheFeatureSize; ++d)
      c.features.push_back(std::max(0.f, 0.5f + 0.3f * g(rng) + (m && d < 64 ? 0.3f : 0.f)));
  }
  write_cache_atomic(path, c);
}

}  // namespace

TEST(Predict, ProbabilitiesEqualNumpyOnExtractedFeatures) {
  TempDir tmp;
  make_images(tmp, tmp / "imgs");
  ToolRun e = run("extract",
                  "--images " + q(tmp / "imgs") + " --weights " + q(weights()) + " --out " +
                      q(tmp / "cache.h5") + " --quiet --precision fp32",
                  tmp);
  ASSERT_EQ(e.status, 0) << e.out << e.err;
  const CacheContents cache = read_cache(tmp / "cache.h5");
  ASSERT_EQ(cache.size(), 5u);

  // Heads: two trained by tools/train (--hidden 64, --hidden 64 32 16) and one written with
  // random weights (2048-512-512-3, class names needing CSV quotes).
  write_training_cache(tmp / "train.h5", cache.settings);
  std::vector<std::string> heads;
  for (const std::string hidden : {"64", "64 32 16"}) {
    const std::string out = tmp / ("run" + std::to_string(heads.size()));
    ToolRun t = run("train",
                    "--cache " + q(tmp / "train.h5") + " --out " + q(out) + " --hidden " + hidden +
                        " --steps 30 --eval-every 10 --quiet",
                    tmp);
    ASSERT_EQ(t.status, 0) << t.err;
    heads.push_back(out + "/head_keras.h5");
    const KerasHead kh = read_keras_head(heads.back());  // train's file, through our reader
    EXPECT_EQ(kh.config.hidden.size(), hidden == "64" ? 1u : 3u);
    EXPECT_EQ(kh.info.class_names, cache.class_names);
  }
  {
    // Centred on the cached images (first bias = -mean @ W1) so its probabilities are not
    // saturated: these random Inception features share a large per-dimension offset (mean ~3,
    // spread across images ~0.6), which drives uncentred random heads to 0/1.
    HeadCpu h = random_head({512, 512}, 3, 9);
    Tensor w1 = h.params().kernel(HeadSection::Params, 0);
    const int64_t h1 = w1.shape()[1];
    std::vector<double> mean(kCacheFeatureSize, 0.0);
    for (size_t i = 0; i < cache.size(); ++i)
      for (int d = 0; d < kCacheFeatureSize; ++d)
        mean[d] += cache.features[i * kCacheFeatureSize + d] / cache.size();
    float* b1 = h.params().bias(HeadSection::Params, 0).data();
    for (int64_t j = 0; j < h1; ++j) {
      double z = 0;
      for (int d = 0; d < kCacheFeatureSize; ++d) z += mean[d] * w1.data()[d * h1 + j];
      b1[j] = static_cast<float>(-z);
    }
    KerasHeadInfo info{{"benign", "mel,anoma", "say \"hi\""},
                       cache.settings.preprocessing,
                       cache.settings.weights_sha256};
    heads.push_back(tmp / "written.h5");
    write_keras_head(heads.back(), h.config(), h.params(), info);
  }
  for (size_t i = 0; i < heads.size(); ++i) {
    SCOPED_TRACE(heads[i]);
    const std::string csv = tmp / ("p" + std::to_string(i) + ".csv");
    ToolRun p = run("predict",
                    "--weights " + q(weights()) + " --head " + q(heads[i]) + " --out " + q(csv) +
                        " --batch 2 --quiet " + q(tmp / "imgs"),
                    tmp);
    ASSERT_EQ(p.status, 0) << p.err;
    EXPECT_EQ(files_starting(tmp.path(), "p" + std::to_string(i) + ".csv.tmp").size(), 0u);
    // Tolerance |predict - numpy| <= 1e-6 + 1e-4 * numpy, per probability: predict recomputes
    // the features (same code and weights as extract; equal up to batch-dependent summation
    // order) and applies the float32 head; numpy applies it in float64 to the cached float32
    // features. Float32 logits are off by ~eps32 * sum|x_i w_i| (features ~3, so up to ~1e-5 in
    // a logit), and a probability p moves by p * (logit error): a relative bound, which also
    // tests saturated outputs (1e-8 stays 1e-8: float_roundtrip prints them exactly). The
    // centred head must also give unsaturated numbers (>= 5 probabilities in (0.01, 0.99)).
    // Near 1 the complement is checked too: |(1-p) - (1-numpy)| <= 1.8e-7 (3 float32 ulps at 1)
    // + 1e-4 * (1-numpy), which a 6-significant-digit print (0.9999994 -> 0.999999) breaks.
    ToolRun v = run_cmd(std::string(ENGINE_TORCH_PYTHON_EXE) + " " + kRefScripts +
                            "apply_head.py --cache " + q(tmp / "cache.h5") + " --head " +
                            q(heads[i]) + " --csv " + q(csv) + " --atol 1e-6 --rtol 1e-4" +
                            (i == 2 ? " --min-unsaturated 5" : ""),
                        tmp);
    std::printf("%s", v.out.c_str());
    EXPECT_EQ(v.status, 0) << v.out << v.err;
  }
  // The ids: extension stripped only when it is an image one; dots kept.
  const std::string body = slurp(tmp / "p2.csv");
  EXPECT_EQ(body.substr(0, body.find('\n')), "image,benign,\"mel,anoma\",\"say \"\"hi\"\"\"");
  for (const char* id : {"\nimg.v1,", "\n\"A,b\",", "\n\"q\"\"uote\",", "\nscan.v2,"})
    EXPECT_NE(body.find(id), std::string::npos) << id << " in\n" << body;

  // A head trained on other Inception weights' features is refused.
  HeadCpu h = random_head({64}, 2, 1);
  write_keras_head(
      tmp / "other.h5", h.config(), h.params(),
      KerasHeadInfo{{"benign", "melanoma"}, cache.settings.preprocessing, std::string(64, 'c')});
  ToolRun o = run("predict",
                  "--weights " + q(weights()) + " --head " + q(tmp / "other.h5") + " --out " +
                      q(tmp / "o.csv") + " " + q(tmp / "imgs"),
                  tmp);
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("other Inception weights"), std::string::npos) << o.err;
  EXPECT_FALSE(fs::exists(tmp / "o.csv"));
  EXPECT_EQ(files_starting(tmp.path(), "o.csv").size(), 0u);
}

TEST(Predict, DuplicateIdsAreRefusedBeforeAnyWork) {
  TempDir tmp;
  const std::string img = engine::test::reference_file("dataset/flat/ISIC_0000000.jpg");
  fs::create_directories(tmp / "flat");
  fs::copy_file(img, tmp / "flat/gray.png");
  fs::copy_file(img, tmp / "flat/gray.jpg");
  fs::create_directories(tmp / "cls/benign");
  fs::create_directories(tmp / "cls/melanoma");
  fs::copy_file(img, tmp / "cls/benign/x.jpg");
  fs::copy_file(img, tmp / "cls/melanoma/x.jpg");
  // --weights and --head do not exist: the duplicate check must come first (no work done).
  const std::string common = "--weights " + q(tmp / "no_weights.h5") + " --head " +
                             q(tmp / "no_head.h5") + " --out " + q(tmp / "p.csv") + " ";
  ToolRun a = run("predict", common + q(tmp / "flat"), tmp);
  EXPECT_EQ(a.status, 2) << a.err;
  EXPECT_EQ(lines(a.err), 1) << a.err;
  EXPECT_NE(a.err.find("image id 'gray' twice"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("gray.png"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("gray.jpg"), std::string::npos) << a.err;
  ToolRun b = run("predict", common + q(tmp / "cls"), tmp);
  EXPECT_EQ(b.status, 2) << b.err;
  EXPECT_NE(b.err.find("benign/x.jpg"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("melanoma/x.jpg"), std::string::npos) << b.err;
  ToolRun c =
      run("predict", common + q(tmp / "cls/benign/x.jpg") + " " + q(tmp / "flat/gray.png"), tmp);
  EXPECT_NE(c.err.find("no_head.h5"), std::string::npos) << "unique ids pass the check: " << c.err;
  EXPECT_EQ(c.status, 1);
  EXPECT_FALSE(fs::exists(tmp / "p.csv"));
}

TEST(Predict, UnusableOutIsRefusedBeforeAnyWorkAndHelpExitsZero) {
  TempDir tmp;
  fs::create_directories(tmp / "folder");
  const std::string img = engine::test::reference_file("dataset/flat/ISIC_0000000.jpg");
  const std::string common =
      "--weights " + q(weights()) + " --head " + q(tmp / "no_head.h5") + " " + q(img) + " --out ";
  ToolRun a = run("predict", common + q(tmp / "folder"), tmp);
  EXPECT_EQ(a.status, 2) << a.err;
  EXPECT_EQ(lines(a.err), 1) << a.err;
  EXPECT_NE(a.err.find("is a folder"), std::string::npos) << a.err;
  ToolRun b = run("predict", common + q(tmp / "missing/p.csv"), tmp);
  EXPECT_EQ(b.status, 2) << b.err;
  EXPECT_NE(b.err.find("does not exist"), std::string::npos) << b.err;
  EXPECT_EQ(files_starting(tmp.path(), "folder.tmp").size(), 0u);

  ToolRun h = run("predict", "--help", tmp);
  EXPECT_EQ(h.status, 0) << h.err;
  EXPECT_NE(h.out.find("--head"), std::string::npos) << h.out;
  for (const char* bad : {"--batch 0", "--device tpu", "--bogus"}) {
    ToolRun r = run("predict", common + q(tmp / "p.csv") + " " + bad, tmp);
    EXPECT_EQ(r.status, 2) << bad << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << bad << ": " << r.err;
  }
}

TEST(Predict, SigtermMidRunLeavesNoTempFile) {
  TempDir tmp;
  // A head matching the reference weights, and enough images (batch 1) that the run is caught
  // between its first and last batch.
  HeadCpu h = random_head({64}, 2, 4);
  write_keras_head(tmp / "head.h5", h.config(), h.params(),
                   KerasHeadInfo{{"benign", "melanoma"},
                                 Preprocessing::for_resize(ResizeFilter::Antialias, true).key(),
                                 sha256_file(weights())});
  fs::create_directories(tmp / "imgs");
  const std::string img = engine::test::reference_file("dataset/flat/ISIC_0000000.jpg");
  for (int i = 0; i < 40; ++i) fs::copy_file(img, tmp / ("imgs/i" + std::to_string(i) + ".jpg"));
  ToolRun r = run("predict",
                  "--weights " + q(weights()) + " --head " + q(tmp / "head.h5") + " --out " +
                      q(tmp / "p.csv") + " --batch 1 --quiet " + q(tmp / "imgs"),
                  tmp, [&] { return !files_starting(tmp.path(), "p.csv.tmp.").empty(); });
  EXPECT_EQ(r.status, -SIGTERM) << r.err;
  EXPECT_EQ(files_starting(tmp.path(), "p.csv").size(), 0u) << "temp or partial CSV left behind";
}

TEST(Predict, ReducedPrecisionOnTheCpuIsABadFlag) {
  TempDir tmp;
  const std::string img = engine::test::reference_file("dataset/flat/ISIC_0000000.jpg");
  // --head does not exist: the flag is refused before anything is read.
  ToolRun r = run("predict",
                  "--weights " + q(weights()) + " --head " + q(tmp / "no_head.h5") + " --out " +
                      q(tmp / "p.csv") + " --device cpu --precision fp16 " + q(img),
                  tmp);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--precision fp16"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "p.csv"));
}

namespace {
// predict's CSV as id -> probabilities.
std::map<std::string, std::vector<double>> read_predictions(const std::string& csv) {
  std::map<std::string, std::vector<double>> m;
  std::istringstream in(slurp(csv));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<double> p;
    const size_t comma = line.find(',');  // the test's ids hold no comma
    std::istringstream fields(line.substr(comma + 1));
    for (std::string f; std::getline(fields, f, ',');) p.push_back(std::stod(f));
    m[line.substr(0, comma)] = p;
  }
  return m;
}
}  // namespace

// --device cuda vs --device cpu, same command. The GPU's fp32 features differ from the CPU's by
// up to ~1e-4 relative (tests/inception_reference.h); through the 2048-term sums of the head's
// first layer (Glorot weights ~0.03, features ~3, errors of random sign: ~sqrt(2048) * 0.03 *
// 3e-4 ~ 4e-4 in a logit) a probability p moves by about p * 2 * 4e-4: bound 1e-6 + 2e-3 * p.
TEST(Predict, CudaEqualsCpuWithinTheFeatureTolerance) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  TempDir tmp;
  fs::create_directories(tmp / "imgs");
  int n_images = 0;  // plain names: read_predictions splits rows at the first comma
  for (const auto& e : fs::directory_iterator(engine::test::reference_file("dataset/flat")))
    if (n_images < 5)
      fs::copy_file(e.path(), tmp / ("imgs/i" + std::to_string(n_images++) + ".jpg"));
  HeadCpu h = random_head({64}, 2, 4);
  write_keras_head(tmp / "head.h5", h.config(), h.params(),
                   KerasHeadInfo{{"benign", "melanoma"},
                                 Preprocessing::for_resize(ResizeFilter::Antialias, false).key(),
                                 sha256_file(weights())});
  std::map<std::string, std::vector<double>> got[2];
  const char* devices[2] = {"cpu", "cuda"};
  for (int d = 0; d < 2; ++d) {
    const std::string csv = tmp / (std::string(devices[d]) + ".csv");
    // One batch of 5: the GPU prepares one batch size only (plans and graph per size).
    ToolRun p =
        run("predict",
            "--weights " + q(weights()) + " --head " + q(tmp / "head.h5") + " --out " + q(csv) +
                " --batch 5 --quiet --device " + devices[d] + " " + q(tmp / "imgs"),
            tmp);
    ASSERT_EQ(p.status, 0) << devices[d] << ": " << p.err;
    EXPECT_EQ(p.err.find("warning:"), std::string::npos) << p.err;
    got[d] = read_predictions(csv);
  }
  ASSERT_EQ(got[0].size(), size_t(n_images));
  ASSERT_EQ(got[1].size(), got[0].size());
  for (const auto& [id, want] : got[0]) {
    ASSERT_EQ(got[1][id].size(), want.size()) << id;
    std::vector<float> g(got[1][id].begin(), got[1][id].end()), w(want.begin(), want.end());
    EXPECT_CLOSE((g.data(), w.data(), int64_t(w.size()), 1e-6, 2e-3, "predict cuda vs cpu " + id));
  }
  // The head was trained on fp32 features: tf32 ones are allowed with one warning line.
  ToolRun t = run("predict",
                  "--weights " + q(weights()) + " --head " + q(tmp / "head.h5") + " --out " +
                      q(tmp / "t.csv") + " --batch 5 --quiet --precision tf32 " + q(tmp / "imgs"),
                  tmp);
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(lines(t.err), 1) << t.err;
  EXPECT_NE(t.err.find("warning:"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("fp32"), std::string::npos) << t.err;
}
