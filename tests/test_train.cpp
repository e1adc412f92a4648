// tests/test_train.cpp: tools/train and tools/predict end to end. The cache is synthetic and
// written here (closed form: two Gaussian classes in 2048-d with a known separation), so the
// expected quality is known: a separable problem must reach a test AUC near 1, far above chance.
// Also: a run killed with SIGKILL and resumed from its checkpoint ends bit-identical to an
// unbroken run; the head file has the Keras Dense layout; bad settings give one-line errors;
// predict writes an ISIC-style CSV whose rows sum to 1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/hdf5_io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

const std::string kBin = std::string(ENGINE_BINARY_DIR) + "/tools/";

struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "train_test_XXXXXX").string();
    path = mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& s) const { return path + "/" + s; }
};

struct ToolRun {
  int status = -1;
  std::string out, err;
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs a tool; when `kill_when` is given, SIGKILLs the process as soon as it returns true
// (polled every 10 ms), so the kill lands at a known stage of the run.
ToolRun run(const std::string& tool, const std::string& args, const TempDir& tmp,
            const std::function<bool()>& kill_when = {}) {
  const std::string cmd = "exec " + kBin + tool + " " + args + " > " + (tmp / "o.txt") + " 2> " + (tmp / "e.txt");
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  if (kill_when) {
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (kill_when()) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } else {
    waitpid(pid, &st, 0);
  }
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), slurp(tmp / "o.txt"), slurp(tmp / "e.txt")};
}

// n images, `mel` of them class 1; class 1's features are shifted by `shift` in 64 dimensions
// (post-ReLU-like: non-negative). Paths ISIC_%07d so the retrain split is deterministic.
void write_synthetic_cache(const std::string& path, int n, int mel, double shift, const std::string& weights_sha) {
  CacheContents c;
  c.settings = {weights_sha, "size=299;resize=antialias;dct_min_side=299;exif_orientation=1;scale=x/127.5-1", "test"};
  c.class_names = {"benign", "melanoma"};
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "ISIC_%07d.jpg", i);
    const bool m = i % (n / mel) == 0;
    c.paths.push_back(std::string(m ? "melanoma/" : "benign/") + name);
    c.sha256.push_back(std::string(64, 'a'));
    c.groups.push_back("");
    c.labels.push_back(m ? 1 : 0);
    for (int d = 0; d < kCacheFeatureSize; ++d)
      c.features.push_back(std::max(0.f, 0.5f + 0.3f * g(rng) + (m && d < 64 ? static_cast<float>(shift) : 0.f)));
  }
  // Paths must be sorted for a valid cache.
  std::vector<size_t> idx(c.paths.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return c.paths[a] < c.paths[b]; });
  CacheContents s = c;
  for (size_t i = 0; i < idx.size(); ++i) {
    s.paths[i] = c.paths[idx[i]], s.labels[i] = c.labels[idx[i]];
    std::copy_n(c.features.begin() + static_cast<long>(idx[i] * kCacheFeatureSize), kCacheFeatureSize,
                s.features.begin() + static_cast<long>(i * kCacheFeatureSize));
  }
  write_cache_atomic(path, s);
}

std::string weights() { return engine::test::reference_file("inception_v3_1based.h5"); }

}  // namespace

TEST(Train, SeparableCacheReachesHighTestAucAndWritesEveryOutput) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 600, 120, 0.25, std::string(64, 'b'));
  ToolRun r = run("train", "--cache " + (tmp / "c.h5") + " --out " + (tmp / "run") + " --steps 300 --eval-every 100 --quiet", tmp);
  ASSERT_EQ(r.status, 0) << r.err;
  std::printf("%s", r.out.c_str());
  const std::string js = slurp(tmp / "run/metrics.json");
  const size_t p = js.find("\"auc\": ");
  ASSERT_NE(p, std::string::npos) << js;
  const double auc = std::stod(js.substr(p + 7));
  // Class means differ by 0.25 in 64 dims at noise 0.3: a linear score separates them with
  // d' = 0.25*8/0.3 = 6.7, i.e. AUC ~ 1; anything under 0.95 means training is broken.
  EXPECT_GT(auc, 0.95) << js;
  for (const char* f : {"report.html", "metrics.csv", "metrics.jsonl", "split.csv", "checkpoint.h5", "best.h5", "head_keras.h5"})
    EXPECT_TRUE(fs::exists(tmp / ("run/" + std::string(f)))) << f;
  const std::string html = slurp(tmp / "run/report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("ROC"), std::string::npos);
  const std::string csv = slurp(tmp / "run/metrics.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);  // header + steps 100, 200, 300

  // Keras Dense layout: layer_names, weight_names, (in, out) kernels.
  H5File f = H5File::open_read(tmp / "run/head_keras.h5");
  EXPECT_EQ(h5_read_string_array_attr(f.id(), "layer_names", f.path()),
            (std::vector<std::string>{"dense_1", "dense_2", "dense_3"}));
  EXPECT_EQ(h5_read_string_array_attr(f.id(), "class_names", f.path()), (std::vector<std::string>{"benign", "melanoma"}));
  const int64_t shapes[3][2] = {{2048, 512}, {512, 512}, {512, 2}};
  for (int l = 0; l < 3; ++l) {
    const std::string name = "dense_" + std::to_string(l + 1);
    H5Id g = h5_open_group(f.id(), name, f.path());
    auto wn = h5_read_string_array_attr(g.get(), "weight_names", f.path());
    ASSERT_EQ(wn.size(), 2u);
    h5_read_float_checked(f.id(), "/" + name + "/" + wn[0], Shape{shapes[l][0], shapes[l][1]}, f.path());
    h5_read_float_checked(f.id(), "/" + name + "/" + wn[1], Shape{shapes[l][1]}, f.path());
  }
}

TEST(Train, KilledAndResumedEqualsUnbroken) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 400, 80, 0.2, std::string(64, 'b'));
  const std::string common = "--cache " + (tmp / "c.h5") + " --hidden 64 64 --steps 300 --eval-every 50 --quiet --out ";
  ASSERT_EQ(run("train", common + (tmp / "a"), tmp).status, 0);
  // Kill once after the first checkpoint and once after the third evaluation row, mid-run.
  auto rows = [&] {
    const std::string m = slurp(tmp / "b/metrics.csv");
    return std::count(m.begin(), m.end(), '\n') - 1;
  };
  EXPECT_EQ(run("train", common + (tmp / "b"), tmp, [&] { return fs::exists(tmp / "b/checkpoint.h5"); }).status, -SIGKILL);
  EXPECT_EQ(run("train", common + (tmp / "b"), tmp, [&] { return rows() >= 3; }).status, -SIGKILL);
  ToolRun done = run("train", common + (tmp / "b"), tmp);
  ASSERT_EQ(done.status, 0) << done.err;
  EXPECT_NE(done.out.find("resuming from"), std::string::npos) << done.out;
  H5File a = H5File::open_read(tmp / "a/head_keras.h5"), b = H5File::open_read(tmp / "b/head_keras.h5");
  for (const char* d : {"/dense_1/dense_1/kernel:0", "/dense_2/dense_2/kernel:0", "/dense_3/dense_3/bias:0"}) {
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
  ToolRun r = run("train", "--cache " + (tmp / "one.h5") + " --out " + (tmp / "r") + " --steps 10", tmp);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("class 'melanoma' has 1 images"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(run("train", "--cache " + (tmp / "nope.h5") + " --out " + (tmp / "r"), tmp).status, 1);
  EXPECT_EQ(run("train", "--cache " + (tmp / "one.h5") + " --out " + (tmp / "r") + " --steps -5", tmp).status, 2);
  EXPECT_EQ(run("train", "--cache " + (tmp / "one.h5") + " --out " + (tmp / "r") + " --rmsprop adam", tmp).status, 2);
}

TEST(Predict, WritesIsicCsvAndRefusesOtherWeights) {
  TempDir tmp;
  write_synthetic_cache(tmp / "c.h5", 400, 80, 0.2, sha256_file(weights()));
  ASSERT_EQ(run("train", "--cache " + (tmp / "c.h5") + " --out " + (tmp / "run") + " --steps 50 --quiet", tmp).status, 0);
  const std::string imgs = engine::test::reference_file("dataset/bad/melanoma");
  ToolRun p = run("predict", "--weights " + weights() + " --head " + (tmp / "run/head_keras.h5") + " --out " +
                                 (tmp / "p.csv") + " --quiet " + imgs + " " + (tmp / "missing.jpg"), tmp);
  EXPECT_EQ(p.status, 3) << p.err;  // the missing file is skipped
  EXPECT_NE(p.err.find("missing.jpg"), std::string::npos) << p.err;
  std::ifstream csv(tmp / "p.csv");
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "image,benign,melanoma");
  int rows = 0;
  while (std::getline(csv, line)) {
    ++rows;
    double a = 0, b = 0;
    char id[64];
    ASSERT_EQ(std::sscanf(line.c_str(), "%63[^,],%lf,%lf", id, &a, &b), 3) << line;
    EXPECT_NEAR(a + b, 1.0, 1e-5) << line;
    EXPECT_EQ(std::string(id).find('.'), std::string::npos) << "image column keeps the extension: " << id;
  }
  EXPECT_EQ(rows, 4);  // ISIC_0000000, ISIC_0000004, png_named, jpeg_named
  // A head trained on other Inception weights' features is refused.
  write_synthetic_cache(tmp / "o.h5", 400, 80, 0.2, std::string(64, 'c'));
  ASSERT_EQ(run("train", "--cache " + (tmp / "o.h5") + " --out " + (tmp / "orun") + " --steps 20 --quiet", tmp).status, 0);
  ToolRun o = run("predict", "--weights " + weights() + " --head " + (tmp / "orun/head_keras.h5") + " --out " +
                                 (tmp / "q.csv") + " " + imgs, tmp);
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("other Inception weights"), std::string::npos) << o.err;
}
