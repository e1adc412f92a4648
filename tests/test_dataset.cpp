// tests/test_dataset.cpp: engine/dataset's listing of an image folder, called directly (no tool
// run): the ISIC CSV layouts (2016-2020, HAM10000; docs/DATASETS.md) on the generated set
// (tests/reference/make_dataset.py) and on each challenge's real header, which column gives the
// groups, malformed CSVs and missing folders refused with one line, ids with dots, rows without a
// label or without a file recorded as skipped with their reason, --shard partitioning the paths,
// and an ISIC 2020 split (engine/split) never putting a patient in two subsets. Moved out of
// tests/test_extract.cpp, which runs tools/extract end to end.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/split.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace engine;
using engine::test::reference_file;
using engine::test::TempDir;

namespace {

std::string dataset(const std::string& sub) { return reference_file("dataset/" + sub); }

}  // namespace

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
// Groups, ids with dots, label reasons.
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
