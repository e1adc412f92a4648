// tests/test_extract_lowp.cpp: tools/extract and tools/predict in the CPU's reduced precisions
// (--precision bf16 | int8 | auto; models/inception_v3_lowp.h) on the small reference set
// (tests/reference/make_dataset.py): the pipeline's guarantees hold in each mode (a run killed
// with SIGKILL in the journal or after the consolidated file, then resumed, is bit-identical to an
// unbroken run, the int8 calibration read back from the journal or the file; --batch 1 equals
// --batch 8 bit for bit); the precision and calibration are cache settings (auto keeps the
// cache's, a malformed calibration is one line naming the file); a CPU without the instructions
// (DNNL_MAX_CPU_ISA=AVX512_CORE in the tool's environment) gets one line and exact fp32 features;
// predict --precision auto follows the head's precision and calibration.
// Cases that need bf16/int8 instructions skip on a CPU without them.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "engine/bottleneck_cache.h"
#include "engine/hdf5_io.h"
#include "engine/preprocessing.h"
#include "models/head.h"
#include "models/head_keras.h"
#include "models/inception_v3_lowp.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;
using engine::test::reference_file;
using engine::test::slurp;
using engine::test::TempDir;
using engine::test::ToolRun;

namespace {

std::string images() { return reference_file("dataset/classes"); }
std::string weights() { return reference_file("inception_v3_1based.h5"); }
constexpr const char* kNoBf16 = "DNNL_MAX_CPU_ISA=AVX512_CORE";  // no AVX512_BF16, no VNNI

ToolRun run(const std::string& tool, const std::string& args, const TempDir& tmp,
            const std::string& env = "") {
  return engine::test::run_tool(tool, args, tmp, {}, SIGKILL, env);
}
std::string args(const std::string& out, const std::string& precision, int batch = 4) {
  return "--images " + images() + " --weights " + weights() + " --out " + out + " --batch " +
         std::to_string(batch) + " --quiet --precision " + precision;
}
// stderr without the random-weights warning the reference weights always print.
std::vector<std::string> err_lines(const ToolRun& r) {
  std::vector<std::string> v;
  size_t p = 0;
  while (p < r.err.size()) {
    const size_t q = std::min(r.err.find('\n', p), r.err.size());
    const std::string line = r.err.substr(p, q - p);
    if (line.find("RANDOM Inception weights") == std::string::npos) v.push_back(line);
    p = q + 1;
  }
  return v;
}
bool same_bits(const CacheContents& a, const CacheContents& b) {
  return a.paths == b.paths && a.features.size() == b.features.size() &&
         std::memcmp(a.features.data(), b.features.data(), a.features.size() * sizeof(float)) == 0;
}
bool cpu_has(CpuPrecision p) { return cpu_precision_unavailable(p).empty(); }
#define SKIP_WITHOUT(p) \
  if (!cpu_has(p)) GTEST_SKIP() << cpu_precision_unavailable(p)

// One unbroken extract per precision (batch 4), made once per test program.
const CacheContents& unbroken(const std::string& precision) {
  static TempDir tmp;
  static std::map<std::string, CacheContents> runs;
  auto it = runs.find(precision);
  if (it != runs.end()) return it->second;
  ToolRun r = run("extract", args(tmp / (precision + ".h5"), precision), tmp);
  if (r.status != 0) fail("unbroken ", precision, " extract failed (", r.status, "): ", r.err);
  return runs[precision] = read_cache(tmp / (precision + ".h5"));
}

}  // namespace

TEST(ExtractLowp, KillNineThenResumeIsBitIdenticalAndBatchInvariant) {
  for (const char* precision : {"bf16", "int8"}) {
    SCOPED_TRACE(precision);
    if (!cpu_has(parse_cpu_precision(precision))) {
      std::printf("  %s: skipped (%s)\n", precision,
                  cpu_precision_unavailable(parse_cpu_precision(precision)).c_str());
      continue;
    }
    const CacheContents& ref = unbroken(precision);
    ASSERT_EQ(ref.size(), 16u);
    EXPECT_EQ(ref.settings.precision, precision);
    if (std::string(precision) == "int8") {
      const Int8Calibration cal = Int8Calibration::parse(ref.settings.calibration, "the cache");
      EXPECT_EQ(cal.images, 16);  // up to 32: every image of this small set
    } else {
      EXPECT_EQ(ref.settings.calibration, "");
    }
    // Killed with a journal piece durable (the calibration only in the journal), and after the
    // consolidated file replaced the journal (the calibration read back from the file).
    for (const char* point : {"piece:renamed#2", "journal:partly_deleted"}) {
      TempDir tmp;
      const std::string out = tmp / "k.h5";
      ToolRun killed = run("extract", args(out, precision) + " --workers 1", tmp,
                           std::string("ENGINE_CACHE_CRASH_AT=") + point);
      ASSERT_EQ(killed.status, -SIGKILL) << point << ": " << killed.err;
      // Resumed with auto: the cache's precision and calibration, not a fresh calibration.
      ToolRun done = run("extract", args(out, "auto"), tmp);
      ASSERT_EQ(done.status, 0) << point << ": " << done.err;
      EXPECT_EQ(done.out.find("calibrated"), std::string::npos) << done.out;
      const CacheContents got = read_cache(out);
      EXPECT_EQ(got.settings.precision, precision);
      EXPECT_EQ(got.settings.calibration, ref.settings.calibration) << point;
      EXPECT_TRUE(same_bits(got, ref)) << "resumed after a kill at " << point;
      std::printf("  %s killed at %-24s resumed: %s", precision, point,
                  done.out.substr(done.out.find("cache:")).c_str());
    }
    // Batch invariance: --batch 1 and --batch 8 give the same bits (and those of batch 4).
    TempDir tmp;
    ToolRun b1 = run("extract", args(tmp / "b1.h5", precision, 1), tmp);
    ToolRun b8 = run("extract", args(tmp / "b8.h5", precision, 8), tmp);
    ASSERT_EQ(b1.status, 0) << b1.err;
    ASSERT_EQ(b8.status, 0) << b8.err;
    EXPECT_TRUE(same_bits(read_cache(tmp / "b1.h5"), read_cache(tmp / "b8.h5")));
    EXPECT_TRUE(same_bits(read_cache(tmp / "b8.h5"), ref));
    // Against fp32: the features are close but not equal (the mode really ran).
    const CacheContents& exact = unbroken("fp32");
    double num = 0, den = 0;
    for (size_t i = 0; i < exact.features.size(); ++i) {
      const double d = double(ref.features[i]) - exact.features[i];
      num += d * d, den += double(exact.features[i]) * exact.features[i];
    }
    const double rel_l2 = std::sqrt(num / den);
    std::printf("  %s vs fp32 extract (random weights): relative L2 %.3g\n", precision, rel_l2);
    EXPECT_GT(rel_l2, 0.0);
    EXPECT_LT(rel_l2, 0.2);
  }
}

TEST(ExtractLowp, PrecisionAndCalibrationAreCacheSettings) {
  SKIP_WITHOUT(CpuPrecision::INT8);
  TempDir tmp;
  const std::string out = tmp / "c.h5";
  write_cache_atomic(out, unbroken("int8"));
  // auto and int8 reuse it with its calibration (no new one); bf16 is refused in one line.
  for (const char* p : {"auto", "int8"}) {
    ToolRun r = run("extract", args(out, p), tmp);
    ASSERT_EQ(r.status, 0) << p << ": " << r.err;
    EXPECT_NE(r.out.find("(0 extracted now, 16 reused)"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("calibrated"), std::string::npos) << r.out;
    EXPECT_EQ(read_cache(out).settings.calibration, unbroken("int8").settings.calibration);
  }
  ToolRun b = run("extract", args(out, "bf16"), tmp);
  EXPECT_EQ(b.status, 1) << b.err;
  ASSERT_EQ(err_lines(b).size(), 1u) << b.err;
  for (const char* part : {"precision int8 (calibration sha256", "precision bf16", "--force"})
    EXPECT_NE(b.err.find(part), std::string::npos) << part << " not in " << b.err;
  // int8 over an fp32 cache: refused before calibrating.
  write_cache_atomic(tmp / "f.h5", unbroken("fp32"));
  ToolRun i8 = run("extract", args(tmp / "f.h5", "int8"), tmp);
  EXPECT_EQ(i8.status, 1) << i8.err;
  ASSERT_EQ(err_lines(i8).size(), 1u) << i8.err;
  EXPECT_NE(i8.err.find("precision fp32"), std::string::npos) << i8.err;
  EXPECT_EQ(i8.out.find("calibrated"), std::string::npos) << i8.out;
  // A malformed calibration in the file: one line naming it.
  CacheContents bad = unbroken("int8");
  bad.settings.calibration = "int8-minmax-v1 images=3 input_1=1";
  write_cache_atomic(tmp / "bad.h5", bad);
  ToolRun m = run("extract", args(tmp / "bad.h5", "auto"), tmp);
  EXPECT_EQ(m.status, 1) << m.err;
  ASSERT_EQ(err_lines(m).size(), 1u) << m.err;
  EXPECT_NE(m.err.find(tmp / "bad.h5"), std::string::npos) << m.err;
  EXPECT_NE(m.err.find("int8 calibration"), std::string::npos) << m.err;
}

// Bad files in bf16 and int8: skipped and listed (exit 3), never a crash, and the good images'
// features unchanged: bf16 bit for bit against the clean run; int8 calibrates on the sample it
// can read (the bad files are in the 32-image sample of so small a set), so its features are
// checked against the clean int8 run within the int8 rounding of a slightly different
// calibration (cosine >= 0.999 per image).
TEST(ExtractLowp, BadFilesAreSkippedInEveryMode) {
  SKIP_WITHOUT(CpuPrecision::INT8);
  SKIP_WITHOUT(CpuPrecision::BF16);
  TempDir tmp;
  const fs::path root = fs::path(tmp / "images");
  fs::copy(images(), root, fs::copy_options::recursive);
  const fs::path some = *fs::directory_iterator(root / "benign");
  const std::string jpeg = slurp(some.string());
  std::ofstream(root / "benign" / "empty.jpg").flush();
  std::ofstream(root / "benign" / "truncated.jpg", std::ios::binary)
      << jpeg.substr(0, jpeg.size() / 3);
  std::ofstream(root / "melanoma" / "notanimage.jpg") << "this is not a JPEG\n";
  for (const char* p : {"bf16", "int8"}) {
    const std::string out = tmp / (std::string(p) + ".h5");
    ToolRun r = run("extract",
                    "--images " + root.string() + " --weights " + weights() + " --out " + out +
                        " --batch 4 --quiet --precision " + p,
                    tmp);
    ASSERT_EQ(r.status, 3) << p << ": " << r.err;
    const CacheContents c = read_cache(out);
    const CacheContents& clean = unbroken(p);
    ASSERT_EQ(c.paths, clean.paths) << p;
    ASSERT_EQ(c.skipped.size(), 3u) << p;
    for (const SkippedFile& k : c.skipped)
      EXPECT_TRUE(k.path.find("empty.jpg") != std::string::npos ||
                  k.path.find("truncated.jpg") != std::string::npos ||
                  k.path.find("notanimage.jpg") != std::string::npos)
          << p << ": " << k.path << " " << k.reason;
    if (std::string(p) == "bf16") {
      EXPECT_TRUE(same_bits(c, clean));
      continue;
    }
    for (size_t i = 0; i < c.size(); ++i) {
      const float* a = c.features.data() + i * kCacheFeatureSize;
      const float* b = clean.features.data() + i * kCacheFeatureSize;
      double ab = 0, aa = 0, bb = 0;
      for (int64_t k = 0; k < kCacheFeatureSize; ++k)
        ab += a[k] * b[k], aa += a[k] * a[k], bb += b[k] * b[k];
      EXPECT_GE(ab / std::sqrt(aa * bb), 0.999) << c.paths[i];
    }
  }
}

// A CPU without the instructions (oneDNN capped at AVX512_CORE): bf16 and int8 print one line
// naming what is missing and compute exact fp32 (recorded as fp32); auto takes fp32 silently.
TEST(ExtractLowp, WithoutTheInstructionsOneLineAndExactFp32) {
  const CacheContents& exact = unbroken("fp32");
  for (const char* p : {"bf16", "int8", "auto"}) {
    SCOPED_TRACE(p);
    TempDir tmp;
    ToolRun r = run("extract", args(tmp / "c.h5", p), tmp, kNoBf16);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<std::string> lines = err_lines(r);
    if (std::string(p) == "auto") {
      EXPECT_TRUE(lines.empty()) << r.err;
    } else {
      ASSERT_EQ(lines.size(), 1u) << r.err;
      EXPECT_NE(lines[0].find(std::string(p) + " needs"), std::string::npos) << lines[0];
      EXPECT_NE(lines[0].find("avx512_core"), std::string::npos) << lines[0];
      EXPECT_NE(lines[0].find("fp32"), std::string::npos) << lines[0];
    }
    const CacheContents c = read_cache(tmp / "c.h5");
    EXPECT_EQ(c.settings.precision, "fp32");
    EXPECT_TRUE(same_bits(c, exact)) << "--precision " << p << " without the instructions";
  }
}

namespace {
// A head for the reference images' features at `precision` (random Glorot weights, seeded).
void write_head(const std::string& path, const std::string& precision,
                const std::string& calibration) {
  HeadConfig c;
  c.hidden = {32};
  c.classes = 2;
  c.seed = 5;
  HeadCpu h(c);
  write_keras_head(path, h.config(), h.params(),
                   KerasHeadInfo{{"benign", "melanoma"},
                                 Preprocessing::for_resize(ResizeFilter::Antialias, false).key(),
                                 sha256_file(weights()),
                                 precision,
                                 calibration});
}
}  // namespace

// predict --precision auto computes in the head's precision (int8 with the head's calibration),
// equal to asking for it; without the instructions one note line and the fp32 result.
TEST(PredictLowp, AutoFollowsTheHead) {
  SKIP_WITHOUT(CpuPrecision::INT8);
  SKIP_WITHOUT(CpuPrecision::BF16);
  TempDir tmp;
  fs::create_directories(tmp / "imgs");
  int n = 0;
  for (const auto& e : fs::directory_iterator(reference_file("dataset/flat")))
    if (n < 4 && e.path().extension() == ".jpg")
      fs::copy_file(e.path(), tmp / ("imgs/i" + std::to_string(n++) + ".jpg"));
  ASSERT_EQ(n, 4);
  write_head(tmp / "fp32.h5", "fp32", "");
  write_head(tmp / "bf16.h5", "bf16", "");
  write_head(tmp / "int8.h5", "int8", unbroken("int8").settings.calibration);
  auto predict = [&](const std::string& head, const std::string& precision,
                     const std::string& env = "") {
    const std::string csv = tmp / (fs::path(head).stem().string() + "_" + precision + ".csv");
    ToolRun r =
        run("predict",
            "--weights " + weights() + " --head " + (tmp / head) + " --out " + csv +
                " --batch 2 --quiet --device cpu --precision " + precision + " " + (tmp / "imgs"),
            tmp, env);
    return std::make_pair(r, r.status == 0 ? slurp(csv) : std::string());
  };
  const std::string fp32 = predict("fp32.h5", "fp32").second;
  ASSERT_FALSE(fp32.empty());
  for (const char* p : {"bf16", "int8"}) {
    SCOPED_TRACE(p);
    const std::string head = std::string(p) + ".h5";
    auto [a, auto_csv] = predict(head, "auto");
    auto [e, explicit_csv] = predict(head, p);
    ASSERT_EQ(a.status, 0) << a.err;
    ASSERT_EQ(e.status, 0) << e.err;
    EXPECT_TRUE(err_lines(a).empty()) << a.err;
    EXPECT_EQ(auto_csv, explicit_csv);
    EXPECT_NE(auto_csv, fp32) << "the head's precision was not used";
    // Without the instructions: one note line, the fp32 probabilities.
    auto [f, fallback_csv] = predict(head, "auto", kNoBf16);
    ASSERT_EQ(f.status, 0) << f.err;
    ASSERT_EQ(err_lines(f).size(), 1u) << f.err;
    EXPECT_NE(f.err.find(std::string(p) + " needs"), std::string::npos) << f.err;
    EXPECT_EQ(fallback_csv, fp32);
  }
  // int8 needs an int8 head (its calibration): exit 2, one line.
  auto [u, none] = predict("fp32.h5", "int8");
  EXPECT_EQ(u.status, 2) << u.err;
  EXPECT_EQ(err_lines(u).size(), 1u) << u.err;
  // A malformed calibration in the head: one line naming the file.
  write_head(tmp / "bad.h5", "int8", "int8-minmax-v1 images=2 input_1=1");
  auto [b, none2] = predict("bad.h5", "auto");
  EXPECT_EQ(b.status, 1) << b.err;
  ASSERT_EQ(err_lines(b).size(), 1u) << b.err;
  EXPECT_NE(b.err.find(tmp / "bad.h5"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("int8 calibration"), std::string::npos) << b.err;
}
