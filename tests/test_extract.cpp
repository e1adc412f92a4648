// tests/test_extract.cpp: tools/extract end to end on a tiny generated ISIC-like set
// (tests/reference/make_dataset.py, PIL): class folders and a --labels CSV, every kind of
// bad file skipped with one line, incremental reruns, settings refused without --force, shards +
// merge equal to one run, and crash safety: the process is SIGKILLed at several moments and the
// resumed cache must hold features bit-identical to an uninterrupted run. --device/--precision:
// fp16 on the CPU is a bad flag, a tf32 cache is refused by an fp32 run; with a GPU (skipped
// without one, failing under ENGINE_REQUIRE_GPU=1) --device cuda gives the CPU run's features
// within the fp32 tolerance of tests/inception_reference.h and reuses a CPU cache.
// ENGINE_BASELINE_EXTRACT=<an extract binary from before the pipeline> also checks that this one
// writes bit-identical features. The listing itself (CSV layouts, groups) is in test_dataset.cpp.
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
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/preprocessing.h"
#include "inception_reference.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;
using engine::test::reference_file;

namespace {

const std::string kTool = std::string(ENGINE_BINARY_DIR) + "/tools/extract";
std::string dataset(const std::string& sub) { return reference_file("dataset/" + sub); }
std::string weights() { return reference_file("inception_v3_1based.h5"); }

using engine::test::slurp;
using engine::test::TempDir;
using engine::test::ToolRun;

// Runs the tool with `args` (already quoted as needed); kill_after_s > 0 sends SIGKILL then.
// env: e.g. "ENGINE_CACHE_CRASH_AT=piece:renamed#2" (the cache's test hook: SIGKILL itself there).
ToolRun run_tool(const std::string& args, const TempDir& tmp, double kill_after_s = 0,
                 const std::string& env = "") {
  std::function<bool()> when;
  if (kill_after_s > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    when = [t0, kill_after_s] {
      return std::chrono::steady_clock::now() - t0 >= std::chrono::duration<double>(kill_after_s);
    };
  }
  return engine::test::run_command(kTool + " " + args, tmp, when, SIGKILL, env);
}

// fp32 unless told: the exact mode (auto would pick bf16 on a CPU that has it).
std::string base_args(const std::string& images, const std::string& out,
                      const std::string& precision = "fp32", int batch = 4) {
  return "--images " + images + " --weights " + weights() + " --out " + out + " --batch " +
         std::to_string(batch) + " --quiet --precision " + precision;
}

// Features of a cache by path.
std::map<std::string, std::vector<float>> features_by_path(const CacheContents& c) {
  std::map<std::string, std::vector<float>> m;
  for (size_t i = 0; i < c.size(); ++i)
    m[c.paths[i]] =
        std::vector<float>(c.features.begin() + static_cast<long>(i * kCacheFeatureSize),
                           c.features.begin() + static_cast<long>((i + 1) * kCacheFeatureSize));
  return m;
}

// The uninterrupted run every other run is compared with (made once per test program).
const CacheContents& reference_run() {
  static TempDir tmp;
  static CacheContents c = [] {
    ToolRun r = run_tool(base_args(dataset("classes"), tmp / "ref.h5"), tmp);
    if (r.status != 0) fail("reference extract run failed (", r.status, "): ", r.err);
    return read_cache(tmp / "ref.h5");
  }();
  return c;
}

}  // namespace

TEST(Extract, ClassFoldersGiveLabelsAndFiniteFeatures) {
  const CacheContents& c = reference_run();
  ASSERT_EQ(c.size(), 16u);
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"benign", "melanoma"}));
  for (size_t i = 0; i < c.size(); ++i) {
    const bool mel = c.paths[i].rfind("melanoma/", 0) == 0;
    EXPECT_EQ(c.labels[i], mel ? 1 : 0) << c.paths[i];
    EXPECT_EQ(c.sha256[i].size(), 64u);
  }
  double sum = 0;
  for (float v : c.features) sum += v;
  EXPECT_GT(sum, 0);  // post-ReLU averages: positive, not all zero
  EXPECT_TRUE(c.skipped.empty());
}

TEST(Extract, BadFilesAreSkippedWithOneLineEachAndExitCode3) {
  TempDir tmp;
  ToolRun r = run_tool(base_args(dataset("bad"), tmp / "bad.h5"), tmp);
  EXPECT_EQ(r.status, 3) << r.err;
  CacheContents c = read_cache(tmp / "bad.h5");
  // 6 good images + a PNG named .jpg + a JPEG named .png (format from the bytes).
  EXPECT_EQ(c.size(), 8u);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"benign/zero_bytes.jpg", "empty"}, {"benign/truncated.jpg", "truncated"},
      {"benign/text.jpg", "not"},         {"benign/riff.webp", "webp"},
      {"benign/scan.tiff", "tiff"},       {"benign/broken_link.jpg", "broken symbolic link"}};
  ASSERT_EQ(c.skipped.size(), want.size()) << r.out;
  for (const auto& [path, reason] : want) {
    bool found = false;
    for (const auto& s : c.skipped)
      if (s.path == path) {
        found = true;
        std::string lr = s.reason;
        for (char& ch : lr) ch = static_cast<char>(std::tolower(ch));
        EXPECT_NE(lr.find(reason), std::string::npos) << path << ": " << s.reason;
        EXPECT_EQ(s.reason.find('\n'), std::string::npos);
      }
    EXPECT_TRUE(found) << path << " not listed as skipped";
    EXPECT_NE(r.err.find("skip: "), std::string::npos);
  }
  EXPECT_NE(r.err.find("empty class folder 'empty_class'"), std::string::npos) << r.err;
  // --strict stops at the first bad image with status 1.
  ToolRun s = run_tool(base_args(dataset("bad"), tmp / "strict.h5") + " --strict --workers 1", tmp);
  EXPECT_EQ(s.status, 1) << s.err;
  EXPECT_NE(s.err.find("--strict"), std::string::npos) << s.err;
}

void expect_equal_to_reference(const std::string& cache, const std::string& what) {
  const auto want = features_by_path(reference_run());
  auto got = features_by_path(read_cache(cache));
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [path, f] : want) {
    ASSERT_TRUE(got.count(path)) << path << " missing after " << what;
    EXPECT_EQ(0, std::memcmp(got[path].data(), f.data(), f.size() * sizeof(float)))
        << path << " differs after " << what;
  }
}

TEST(Extract, KillNineAtEveryCachePointThenResumeIsBitIdentical) {
  // SIGKILL raised by the process itself at exact points of the cache's write protocol (16
  // images in batches of 4: pieces 1-4, then the consolidated file and the journal deletion).
  for (const char* point :
       {"piece:mid_write#1", "piece:tmp_written#2", "piece:renamed#3", "piece:mid_write#4",
        "consolidated:tmp_written", "consolidated:renamed", "journal:partly_deleted"}) {
    TempDir tmp;
    const std::string out = tmp / "k.h5";
    ToolRun killed = run_tool(base_args(dataset("classes"), out) + " --workers 1", tmp, 0,
                              std::string("ENGINE_CACHE_CRASH_AT=") + point);
    EXPECT_EQ(killed.status, -SIGKILL) << point << ": " << killed.err;
    ToolRun done = run_tool(base_args(dataset("classes"), out), tmp);
    ASSERT_EQ(done.status, 0) << point << ": " << done.err;
    expect_equal_to_reference(out, std::string("a kill at ") + point);
    std::printf("  killed at %-26s resumed: %s", point,
                done.out.substr(done.out.find("cache:")).c_str());
  }
}

TEST(Extract, KillNineAtRandomMomentsThenResumeIsBitIdentical) {
  // External kill -9 at fractions of an unbroken run's duration (start-up hashes and loads the
  // weights first), twice in a row, then a run to the end.
  TempDir probe;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_tool(base_args(dataset("classes"), probe / "p.h5"), probe).status, 0);
  const double full = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (double frac : {0.55, 0.7, 0.85}) {
    TempDir tmp;
    const std::string out = tmp / "k.h5";
    ToolRun a = run_tool(base_args(dataset("classes"), out), tmp, frac * full);
    ToolRun b = run_tool(base_args(dataset("classes"), out), tmp, frac * full);
    ToolRun done = run_tool(base_args(dataset("classes"), out), tmp);
    ASSERT_EQ(done.status, 0) << done.err;
    expect_equal_to_reference(out, "kills at " + std::to_string(frac) + " of the run");
    std::printf("  kill -9 at %.1fs (status %d), again (status %d), resumed: %s", frac * full,
                a.status, b.status, done.out.substr(done.out.find("cache:")).c_str());
  }
}

TEST(Extract, IncrementalRerunExtractsOnlyNewOrChangedAndDropsDeleted) {
  TempDir tmp;
  fs::copy(dataset("classes"), tmp / "imgs", fs::copy_options::recursive);
  ASSERT_EQ(run_tool(base_args(tmp / "imgs", tmp / "c.h5"), tmp).status, 0);
  CacheContents before = read_cache(tmp / "c.h5");
  fs::remove(tmp / "imgs/benign/ISIC_0000001.jpg");
  fs::copy_file(tmp / "imgs/benign/ISIC_0000002.jpg", tmp / "imgs/benign/ISIC_0000099.jpg");
  fs::copy_file(tmp / "imgs/melanoma/ISIC_0000004.jpg", tmp / "imgs/benign/ISIC_0000005.jpg",
                fs::copy_options::overwrite_existing);  // changed content, same name
  ToolRun r = run_tool(base_args(tmp / "imgs", tmp / "c.h5"), tmp);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("(2 extracted now, 14 reused)"), std::string::npos) << r.out;
  CacheContents after = read_cache(tmp / "c.h5");
  auto b = features_by_path(before), a = features_by_path(after);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_FALSE(a.count("benign/ISIC_0000001.jpg"));
  EXPECT_EQ(a.at("benign/ISIC_0000099.jpg"), b.at("benign/ISIC_0000002.jpg"));
  EXPECT_EQ(a.at("benign/ISIC_0000005.jpg"), b.at("melanoma/ISIC_0000004.jpg"));
}

TEST(Extract, OtherSettingsAreRefusedUnlessForced) {
  TempDir tmp;
  ASSERT_EQ(run_tool(base_args(dataset("classes"), tmp / "c.h5"), tmp).status, 0);
  ToolRun r = run_tool(base_args(dataset("classes"), tmp / "c.h5") + " --resize bilinear", tmp);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  ToolRun f =
      run_tool(base_args(dataset("classes"), tmp / "c.h5") + " --resize bilinear --force", tmp);
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(read_cache(tmp / "c.h5").settings.preprocessing,
            Preprocessing::for_resize(ResizeFilter::Bilinear, false).key());
}

TEST(Extract, ShardsMergedEqualOneRun) {
  TempDir tmp;
  ASSERT_EQ(run_tool(base_args(dataset("classes"), tmp / "s1.h5") + " --shard 1/2", tmp).status, 0);
  ASSERT_EQ(run_tool(base_args(dataset("classes"), tmp / "s2.h5") + " --shard 2/2", tmp).status, 0);
  const size_t n1 = read_cache(tmp / "s1.h5").size(), n2 = read_cache(tmp / "s2.h5").size();
  EXPECT_GT(n1, 0u);
  EXPECT_GT(n2, 0u);
  ToolRun m =
      run_tool("--merge " + (tmp / "all.h5") + " " + (tmp / "s1.h5") + " " + (tmp / "s2.h5"), tmp);
  ASSERT_EQ(m.status, 0) << m.err;
  CacheContents all = read_cache(tmp / "all.h5");
  const CacheContents& ref = reference_run();
  EXPECT_EQ(all.paths, ref.paths);
  EXPECT_EQ(all.labels, ref.labels);
  EXPECT_EQ(all.sha256, ref.sha256);
  EXPECT_EQ(all.class_names, ref.class_names);
  EXPECT_EQ(0, std::memcmp(all.features.data(), ref.features.data(),
                           ref.features.size() * sizeof(float)));
}

TEST(Extract, BadFlagsAndBadWeightsGiveOneLine) {
  TempDir tmp;
  EXPECT_EQ(run_tool("--images " + dataset("classes") + " --batch 0", tmp).status, 2);
  EXPECT_EQ(run_tool("--bogus", tmp).status, 2);
  ToolRun w = run_tool("--images " + dataset("classes") + " --weights " +
                           reference_file("bad/wrong_shape.h5") + " --out " + (tmp / "x.h5"),
                       tmp);
  EXPECT_EQ(w.status, 1);
  EXPECT_NE(w.err.find("wrong_shape.h5"), std::string::npos) << w.err;
  if (cuda_availability().devices == 0) {  // without a GPU, --device cuda says why (exit 1)
    ToolRun d = run_tool(base_args(dataset("classes"), tmp / "y.h5") + " --device cuda", tmp);
    EXPECT_EQ(d.status, 1);
    EXPECT_NE(d.err.find("--device cuda"), std::string::npos) << d.err;
  }
  ToolRun s = run_tool(base_args(dataset("classes"), tmp / "z.h5") + " --shard 3/2", tmp);
  EXPECT_EQ(s.status, 2);  // a bad flag, refused before any work
  EXPECT_NE(s.err.find("--shard"), std::string::npos) << s.err;
}

// ---------------------------------------------------------------------------------------------
// Symlinks, the group column message.
// ---------------------------------------------------------------------------------------------

// Keys are the paths as listed under --images: a file linked into two class folders is two
// entries (not a finalize failure), a linked class folder keeps its own name.
TEST(Extract, SymlinkedImagesKeepTheirListedPaths) {
  TempDir tmp;
  fs::create_directories(tmp / "flat");
  fs::create_directories(tmp / "target_dir");
  fs::create_directories(tmp / "imgs/benign");
  fs::create_directories(tmp / "imgs/melanoma");
  fs::copy_file(dataset("flat/ISIC_0000002.jpg"), tmp / "flat/ISIC_9000000.jpg");
  fs::copy_file(dataset("flat/ISIC_0000004.jpg"), tmp / "imgs/melanoma/ISIC_0000004.jpg");
  fs::copy_file(dataset("flat/ISIC_0000001.jpg"), tmp / "target_dir/ISIC_0000001.jpg");
  fs::create_symlink("../../flat/ISIC_9000000.jpg", tmp / "imgs/benign/ISIC_9000000.jpg");
  fs::create_symlink("../../flat/ISIC_9000000.jpg", tmp / "imgs/melanoma/ISIC_9000000.jpg");
  fs::create_directory_symlink("../target_dir", tmp / "imgs/nevus");
  ToolRun r = run_tool(base_args(tmp / "imgs", tmp / "c.h5"), tmp);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  CacheContents c = read_cache(tmp / "c.h5");
  EXPECT_EQ(c.paths,
            (std::vector<std::string>{"benign/ISIC_9000000.jpg", "melanoma/ISIC_0000004.jpg",
                                      "melanoma/ISIC_9000000.jpg", "nevus/ISIC_0000001.jpg"}));
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"benign", "melanoma", "nevus"}));
  EXPECT_EQ(c.labels, (std::vector<int32_t>{0, 1, 1, 2}));
  auto f = features_by_path(c);
  EXPECT_EQ(f["benign/ISIC_9000000.jpg"], f["melanoma/ISIC_9000000.jpg"]);
  EXPECT_EQ(c.sha256[0], c.sha256[2]);
  // A rerun reuses all four (the keys did not move).
  ToolRun again = run_tool(base_args(tmp / "imgs", tmp / "c.h5"), tmp);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("(0 extracted now, 4 reused)"), std::string::npos) << again.out;
}

TEST(Extract, PrintsWhichColumnGaveTheGroups) {
  TempDir tmp;
  fs::create_directories(tmp / "train");
  for (int i = 0; i < 2; ++i)
    fs::copy_file(dataset("flat/ISIC_000000" + std::to_string(i) + ".jpg"),
                  tmp / ("train/ISIC_000000" + std::to_string(i) + ".jpg"));
  {
    std::ofstream(tmp / "gt.csv") << "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_"
                                     "general_challenge,diagnosis,benign_malignant,target\n"
                                     "ISIC_0000000,IP_1,IL_1,male,45.0,torso,nevus,benign,0\nISIC_"
                                     "0000001,IP_1,IL_2,male,45.0,torso,melanoma,malignant,1\n";
  }
  ToolRun r =
      run_tool(base_args(tmp / "train", tmp / "c.h5") + " --labels " + (tmp / "gt.csv"), tmp);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("groups for the split: column 'patient_id'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 distinct"), std::string::npos) << r.out;
  CacheContents c = read_cache(tmp / "c.h5");
  EXPECT_EQ(c.groups, (std::vector<std::string>{"IP_1", "IP_1"}));
}

// ---------------------------------------------------------------------------------------------
// --device and --precision
// ---------------------------------------------------------------------------------------------
TEST(Extract, PrecisionFlagsAndPrecisionAsACacheSetting) {
  TempDir tmp;
  // Reduced precision on the CPU: one line, exit 2, before any work (no cache file).
  for (const char* precision : {"fp16", "tf32"}) {
    const std::string flags = std::string(" --device cpu (") + precision + ")";
    ToolRun r =
        run_tool(base_args(dataset("classes"), tmp / "p.h5", precision) + " --device cpu", tmp);
    EXPECT_EQ(r.status, 2) << flags << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("GPU"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "p.h5.lock")) << flags << ": work started";
  }
  {  // bf16/int8 are CPU modes: with --device cuda a bad flag, refused before any work.
    ToolRun r =
        run_tool(base_args(dataset("classes"), tmp / "p.h5", "bf16") + " --device cuda", tmp);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find("CPU only"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "p.h5.lock"));
  }
  // A tf32 cache of these images (as a GPU run writes it) resumed by an fp32 run: refused with
  // one line naming both precisions, unless --force.
  CacheSettings s;
  s.weights_sha256 = sha256_file(weights());
  s.preprocessing = Preprocessing::for_resize(ResizeFilter::Antialias, false).key();
  s.engine_version = "test";
  s.precision = "tf32";
  CacheContents c = reference_run();  // its features stand in for tf32 ones
  c.settings = s;
  write_cache_atomic(tmp / "t.h5", c);
  ToolRun r = run_tool(base_args(dataset("classes"), tmp / "t.h5"), tmp);
  EXPECT_EQ(r.status, 1) << r.err;
  // auto keeps the cache's precision: tf32, which the CPU does not compute (one line).
  ToolRun a = run_tool(base_args(dataset("classes"), tmp / "t.h5", "auto") + " --device cpu", tmp);
  EXPECT_EQ(a.status, 1) << a.err;
  EXPECT_EQ(std::count(a.err.begin(), a.err.end(), '\n'), 1) << a.err;
  EXPECT_NE(a.err.find("holds tf32 features"), std::string::npos) << a.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const char* part : {"precision tf32", "precision fp32", "--force"})
    EXPECT_NE(r.err.find(part), std::string::npos) << part << " not in " << r.err;
  ToolRun f = run_tool(base_args(dataset("classes"), tmp / "t.h5") + " --force", tmp);
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(read_cache(tmp / "t.h5").settings.precision, "fp32");
  expect_equal_to_reference(tmp / "t.h5", "--force over a tf32 cache");
}

// The features this extract writes are bit-identical to those of the extract binary named by
// ENGINE_BASELINE_EXTRACT (one built before the pipeline moved into models/extract_pipeline).
TEST(Extract, FeaturesBitIdenticalToBaselineBinary) {
  const char* baseline = std::getenv("ENGINE_BASELINE_EXTRACT");
  if (!baseline || !*baseline)
    GTEST_SKIP() << "set ENGINE_BASELINE_EXTRACT to an extract binary to compare with";
  TempDir tmp;
  ToolRun r = engine::test::run_command(
      std::string(baseline) + " " + base_args(dataset("classes"), tmp / "base.h5"), tmp);
  ASSERT_EQ(r.status, 0) << r.err;
  expect_equal_to_reference(tmp / "base.h5", "the baseline binary");
}

// --device cuda against the CPU run of the same command: features within the fp32 tolerance of
// the Inception tests (tests/inception_reference.h), and a CPU fp32 cache is reused as is.
TEST(Extract, CudaEqualsCpuWithinFp32Tolerance) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  TempDir tmp;
  ToolRun g = run_tool(base_args(dataset("classes"), tmp / "g.h5") + " --device cuda", tmp);
  ASSERT_EQ(g.status, 0) << g.err;
  const CacheContents gpu = read_cache(tmp / "g.h5");
  const CacheContents& cpu = reference_run();
  ASSERT_EQ(gpu.paths, cpu.paths);
  EXPECT_EQ(gpu.settings.precision, "fp32");
  double max_ref = 0;
  for (float v : cpu.features) max_ref = std::max(max_ref, std::fabs(double(v)));
  EXPECT_CLOSE((gpu.features.data(), cpu.features.data(), int64_t(cpu.features.size()),
                engine::test::kBottleneckAtolScale * max_ref, engine::test::kBottleneckRtol,
                "extract --device cuda vs --device cpu"));
  fs::copy_file(tmp / "g.h5", tmp / "c.h5");
  ToolRun again = run_tool(base_args(dataset("classes"), tmp / "c.h5") + " --device cpu", tmp);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("(0 extracted now, 16 reused)"), std::string::npos) << again.out;
  // tf32 makes a cache of its own setting (format_version 2), refused by fp32 runs.
  ToolRun t = run_tool(base_args(dataset("classes"), tmp / "t.h5", "tf32"), tmp);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(read_cache(tmp / "t.h5").settings.precision, "tf32");
  EXPECT_EQ(run_tool(base_args(dataset("classes"), tmp / "t.h5") + " --device cuda", tmp).status,
            1);
}
