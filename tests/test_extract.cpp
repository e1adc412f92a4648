// tests/test_extract.cpp: tools/extract end to end on a tiny generated ISIC-like set
// (tests/reference/make_dataset.py, PIL): class folders and the ISIC CSV layouts, every kind of
// bad file skipped with one line, incremental reruns, settings refused without --force, shards +
// merge equal to one run, and crash safety: the process is SIGKILLed at several moments and the
// resumed cache must hold features bit-identical to an uninterrupted run. --device/--precision:
// fp16 on the CPU is a bad flag, a tf32 cache is refused by an fp32 run; with a GPU (skipped
// without one, failing under ENGINE_REQUIRE_GPU=1) --device cuda gives the CPU run's features
// within the fp32 tolerance of tests/inception_reference.h and reuses a CPU cache.
// ENGINE_BASELINE_EXTRACT=<an extract binary from before the pipeline> also checks that this one
// writes bit-identical features.
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
#include <set>
#include <sstream>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/preprocessing.h"
#include "engine/split.h"
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

std::string base_args(const std::string& images, const std::string& out) {
  return "--images " + images + " --weights " + weights() + " --out " + out + " --batch 4 --quiet";
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

// ISIC CSV layouts (docs/DATASETS.md), through list_dataset directly.
TEST(Dataset, IsicCsvLayouts) {
  const std::string flat = dataset("flat"), csv = reference_file("dataset");
  Dataset d16 = list_dataset(flat, {csv + "/labels_2016.csv", "", "", false});
  EXPECT_EQ(d16.class_names, (std::vector<std::string>{"benign", "malignant"}));
  ASSERT_EQ(d16.images.size(), 16u);
  EXPECT_EQ(d16.images[0].meta.label, 1);  // ISIC_0000000 is melanoma (every 4th)
  EXPECT_EQ(d16.images[1].meta.label, 0);
  EXPECT_TRUE(d16.skipped.empty());

  Dataset d17 = list_dataset(flat, {csv + "/labels_2017.csv", "", "", false});
  EXPECT_EQ(d17.class_names, (std::vector<std::string>{"not_melanoma", "melanoma"}));
  EXPECT_EQ(d17.images[4].meta.label, 1);

  Dataset d18 = list_dataset(flat, {csv + "/labels_2018.csv", "", "", false});
  EXPECT_EQ(d18.class_names,
            (std::vector<std::string>{"MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"}));
  EXPECT_EQ(d18.images[0].meta.label, 0);
  EXPECT_EQ(d18.images[1].meta.label, 1);
  EXPECT_EQ(d18.images[2].meta.label, 4);

  Dataset d20 = list_dataset(flat, {csv + "/labels_2020.csv", "", "", false});
  EXPECT_EQ(d20.class_names, (std::vector<std::string>{"benign", "malignant"}));
  EXPECT_EQ(d20.images[0].meta.group, "IP_0000000");
  EXPECT_EQ(d20.images[3].meta.group, "IP_0000001");
  EXPECT_EQ(d20.images[0].meta.label, 1);

  Dataset dt = list_dataset(flat, {csv + "/labels_2020.csv", "target", "", false});
  EXPECT_EQ(dt.class_names, (std::vector<std::string>{"benign", "malignant"}));
  EXPECT_EQ(dt.images[0].meta.label, 1);
}

TEST(Dataset, MalformedCsvAndMissingFolderGiveOneLine) {
  TempDir tmp;
  { std::ofstream(tmp / "nohdr.csv") << "foo,bar\n1,2\n"; }
  EXPECT_THROW(list_dataset(dataset("flat"), {tmp / "nohdr.csv", "", "", false}), Error);
  { std::ofstream(tmp / "q.csv") << "image,MEL\n\"ISIC_0000000,1\n"; }
  try {
    list_dataset(dataset("flat"), {tmp / "q.csv", "", "", false});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unterminated quoted field"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(list_dataset(tmp / "nope", {}), Error);
  {
    std::ofstream(tmp / "rows.csv")
        << "image,MEL,NV\nISIC_0000000,1,1\nISIC_0000001,0,1\nISIC_9999999,1,0\n";
  }
  Dataset d = list_dataset(dataset("flat"), {tmp / "rows.csv", "", "", false});
  ASSERT_EQ(d.images.size(), 1u);  // 0 has two labels set; 9999999 has no file
  bool two = false, nofile = false;
  for (auto& n : d.notes)
    two |= n.find("2 one-hot labels") != std::string::npos,
        nofile |= n.find("ISIC_9999999 has no image file") != std::string::npos;
  EXPECT_TRUE(two);
  EXPECT_TRUE(nofile);
}

TEST(Dataset, ShardsPartitionThePaths) {
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 300; ++i) {
    const std::string p = "benign/ISIC_" + std::to_string(i) + ".jpg";
    int hits = 0;
    for (int k = 1; k <= 3; ++k)
      if (in_shard(p, k, 3)) ++hits, ++counts[k - 1];
    EXPECT_EQ(hits, 1) << p;
  }
  for (int c : counts) EXPECT_GT(c, 60);
}

// ---------------------------------------------------------------------------------------------
// Groups, ids with dots, label reasons, symlinks.
// ---------------------------------------------------------------------------------------------

// The real ground-truth headers of each challenge (first rows in their layout) over a folder of
// empty files (list_dataset does not read images): which column gives the groups.
TEST(Dataset, GroupColumnOnRealIsicHeaders) {
  TempDir tmp;
  fs::create_directories(tmp / "img");
  for (int i = 0; i < 4; ++i) std::ofstream(tmp / ("img/ISIC_000000" + std::to_string(i) + ".jpg"));
  struct Case {
    const char* name;
    std::string csv;
    std::vector<std::string> classes;
    std::string group_col;            // "" = no groups
    std::vector<std::string> groups;  // per image, sorted by path
  };
  const std::vector<Case> cases = {
      {"2016",
       "ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\nISIC_0000003,benign\n",
       {"benign", "malignant"},
       "",
       {"", "", "", ""}},
      {"2017",
       "image_id,melanoma,seborrheic_keratosis\nISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\n"
       "ISIC_0000002,0.0,1.0\nISIC_0000003,0.0,0.0\n",
       {"not_melanoma", "melanoma"},
       "",
       {"", "", "", ""}},
      {"2018",
       "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
       "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_0000002,0.0,0.0,1.0,0.0,0.0,0.0,0.0\n"
       "ISIC_0000003,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n",
       {"MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"},
       "",
       {"", "", "", ""}},
      {"2019",
       "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
       "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_0000002,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
       "1.0,0.0\n"
       "ISIC_0000003,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n",
       {"MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"},
       "",
       {"", "", "", ""}},
      {"2020",
       "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
       "benign_malignant,target\n"
       "ISIC_0000000,IP_7279968,IL_7972535,male,45.0,head/neck,unknown,benign,0\n"
       "ISIC_0000001,IP_7279968,IL_4649854,male,45.0,upper extremity,unknown,benign,0\n"
       "ISIC_0000002,IP_3075186,IL_9087444,female,50.0,lower extremity,nevus,benign,0\n"
       "ISIC_0000003,IP_3075186,IL_4255399,female,50.0,torso,melanoma,malignant,1\n",
       {"benign", "malignant"},
       "patient_id",
       {"IP_7279968", "IP_7279968", "IP_3075186", "IP_3075186"}},
      {"HAM10000",
       "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
       "HAM_0000118,ISIC_0000000,bkl,histo,80.0,male,scalp\nHAM_0000118,ISIC_0000001,bkl,histo,80."
       "0,male,scalp\n"
       "HAM_0002730,ISIC_0000002,mel,histo,80.0,male,scalp\nHAM_0001466,ISIC_0000003,nv,histo,75.0,"
       "male,ear\n",
       {"bkl", "mel", "nv"},
       "lesion_id",
       {"HAM_0000118", "HAM_0000118", "HAM_0002730", "HAM_0001466"}},
  };
  for (const auto& c : cases) {
    const std::string csv = tmp / (std::string(c.name) + ".csv");
    { std::ofstream(csv) << c.csv; }
    Dataset d = list_dataset(tmp / "img", {csv, "", "", false});
    EXPECT_EQ(d.class_names, c.classes) << c.name;
    ASSERT_EQ(d.images.size(), 4u) << c.name;
    EXPECT_TRUE(d.skipped.empty()) << c.name;
    for (size_t i = 0; i < 4; ++i)
      EXPECT_EQ(d.images[i].meta.group, c.groups[i]) << c.name << " image " << i;
    if (c.group_col.empty())
      EXPECT_EQ(d.group_source.rfind("none", 0), 0u) << c.name << ": " << d.group_source;
    else
      EXPECT_NE(d.group_source.find("'" + c.group_col + "'"), std::string::npos)
          << c.name << ": " << d.group_source;
  }
  // The generated 2020 file (make_dataset.py, v2 header with lesion_id) also groups by patient.
  Dataset d20 =
      list_dataset(dataset("flat"), {reference_file("dataset/labels_2020.csv"), "", "", false});
  EXPECT_NE(d20.group_source.find("'patient_id'"), std::string::npos) << d20.group_source;
  Dataset ham = list_dataset(dataset("flat"),
                             {reference_file("dataset/ham10000_metadata.csv"), "", "", false});
  EXPECT_EQ(ham.class_names, (std::vector<std::string>{"mel", "nv"}));
  EXPECT_EQ(ham.images[1].meta.group, "HAM_0000000");
  Dataset d19 =
      list_dataset(dataset("flat"), {reference_file("dataset/labels_2019.csv"), "", "", false});
  EXPECT_EQ(d19.class_names.size(), 9u);
}

// ISIC 2020: a patient has several lesions (one lesion id per image here). The split must keep
// each patient in one subset; grouping by lesion (the old choice) would not.
TEST(Dataset, Isic2020SplitNeverPutsAPatientInTwoSubsets) {
  TempDir tmp;
  fs::create_directories(tmp / "img");
  std::ostringstream csv;
  csv << "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
         "benign_malignant,target\n";
  std::map<std::string, std::string> lesion_of;
  int img = 0;
  for (int p = 0; p < 150; ++p)
    for (int k = 0; k < 1 + p % 5; ++k, ++img) {
      char id[32], pid[32], lid[32];
      std::snprintf(id, sizeof id, "ISIC_%07d", 100000 + img * 7);
      std::snprintf(pid, sizeof pid, "IP_%07d", 5000000 + p * 13);
      std::snprintf(lid, sizeof lid, "IL_%07d", 9000000 - img * 11);
      std::ofstream(tmp / ("img/" + std::string(id) + ".jpg"));
      const bool mal = img % 5 == 0;
      csv << id << "," << pid << "," << lid << ",female,40.0,torso,"
          << (mal ? "melanoma,malignant,1" : "nevus,benign,0") << "\n";
      lesion_of[std::string(id) + ".jpg"] = lid;
    }
  { std::ofstream(tmp / "gt.csv") << csv.str(); }
  Dataset d = list_dataset(tmp / "img", {tmp / "gt.csv", "", "", false});
  ASSERT_EQ(d.images.size(), static_cast<size_t>(img));
  std::vector<std::string> paths, groups;
  std::vector<int32_t> labels;
  for (const auto& im : d.images)
    paths.push_back(im.meta.path), groups.push_back(im.meta.group), labels.push_back(im.meta.label);
  std::vector<Subset> s = split_dataset(paths, groups, labels, d.class_names, 10, 10);
  std::map<std::string, std::set<int>> subsets_of_patient, by_lesion;
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_EQ(groups[i].rfind("IP_", 0), 0u) << groups[i];
    subsets_of_patient[groups[i]].insert(static_cast<int>(s[i]));
    by_lesion[groups[i]].insert(
        static_cast<int>(assign_subset(paths[i], lesion_of[paths[i]], 10, 10)));
  }
  EXPECT_EQ(subsets_of_patient.size(), 150u);
  for (const auto& [patient, sets] : subsets_of_patient)
    EXPECT_EQ(sets.size(), 1u) << patient << " is in two subsets";
  int leaking = 0;
  for (const auto& [patient, sets] : by_lesion) leaking += sets.size() > 1;
  EXPECT_GT(leaking, 0) << "the data should be able to show a lesion-grouped leak";
}

TEST(Dataset, IdsWithDotsAreNotCutAtTheDot) {
  TempDir tmp;
  fs::create_directories(tmp / "img");
  for (const char* f : {"img.v1.jpg", "img.v2.JPG", "ISIC_1.jpeg", "other.png", "scan.2.PNG"})
    std::ofstream(tmp / ("img/" + std::string(f)));
  {
    std::ofstream(tmp / "l.csv")
        << "image_id,benign_malignant\nimg.v1,benign\nimg.v2,malignant\nISIC_1.jpg,benign\nother."
           "png,malignant\nscan.2,benign\n";
  }
  Dataset d = list_dataset(tmp / "img", {tmp / "l.csv", "", "", false});
  EXPECT_EQ(d.images.size(), 5u);
  EXPECT_TRUE(d.skipped.empty()) << d.skipped[0].path << ": " << d.skipped[0].reason;
  for (const auto& n : d.notes) EXPECT_EQ(n.find("duplicate"), std::string::npos) << n;
  std::map<std::string, int> label;
  for (const auto& im : d.images) label[im.meta.path] = im.meta.label;
  EXPECT_EQ(label["img.v1.jpg"], 0);
  EXPECT_EQ(label["img.v2.JPG"], 1);
  EXPECT_EQ(label["other.png"], 1);
}

TEST(Dataset, RowsWithoutALabelAreRecordedAsSuch) {
  TempDir tmp;
  fs::create_directories(tmp / "img");
  for (const char* f : {"a.jpg", "b.jpg", "c.jpg", "d.jpg"})
    std::ofstream(tmp / ("img/" + std::string(f)));
  { std::ofstream(tmp / "l.csv") << "image_id,benign_malignant\na,benign\nb,\nc,malignant\n"; }
  Dataset d = list_dataset(tmp / "img", {tmp / "l.csv", "", "", false});
  std::map<std::string, std::string> why;
  for (const auto& s : d.skipped) why[s.path] = s.reason;
  ASSERT_EQ(why.size(), 2u);
  EXPECT_NE(why["b.jpg"].find("no label"), std::string::npos) << why["b.jpg"];
  EXPECT_EQ(why["b.jpg"].find("no row"), std::string::npos) << why["b.jpg"];
  EXPECT_NE(why["d.jpg"].find("no row"), std::string::npos) << why["d.jpg"];
  { std::ofstream(tmp / "h.csv") << "image,MEL,NV\na,1,1\nb,0,1\nc,1,0\nd,0,1\n"; }
  Dataset h = list_dataset(tmp / "img", {tmp / "h.csv", "", "", false});
  ASSERT_EQ(h.skipped.size(), 1u);
  EXPECT_NE(h.skipped[0].reason.find("2 one-hot labels"), std::string::npos) << h.skipped[0].reason;
  for (const auto& n : h.notes) EXPECT_EQ(n.find("row for a has no image"), std::string::npos) << n;
}

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
  for (const char* flags : {" --device cpu --precision fp16", " --device cpu --precision tf32"}) {
    ToolRun r = run_tool(base_args(dataset("classes"), tmp / "p.h5") + flags, tmp);
    EXPECT_EQ(r.status, 2) << flags << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("GPU"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "p.h5.lock")) << flags << ": work started";
  }
  EXPECT_EQ(run_tool(base_args(dataset("classes"), tmp / "p.h5") + " --precision bf16", tmp).status,
            2);
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
  ToolRun t = run_tool(base_args(dataset("classes"), tmp / "t.h5") + " --precision tf32", tmp);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(read_cache(tmp / "t.h5").settings.precision, "tf32");
  EXPECT_EQ(run_tool(base_args(dataset("classes"), tmp / "t.h5") + " --device cuda", tmp).status,
            1);
}
