// tests/test_cache_file.cpp: the consolidated cache file (engine/cache_file.{h,cpp}, layout
// weights/CACHE.md): round trips (N = 0, 1, 300) checked bitwise; the layout (dtypes, shapes,
// chunking, Fletcher-32, no object times) checked through hdf5_io's layout queries; bad contents
// refused leaving the old file; a flipped feature bit caught by read, open and merge; and bad files
// written with hdf5_io's typed writers (not the cache's writer), each with one fault, rejected
// with one line naming the file and the dataset or attribute.
// Run: ./test_cache_file (writes only under the system temporary directory).
#include <gtest/gtest.h>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

TEST(CacheFile, RoundTripIsBitwise) {
  TempDir dir;
  for (size_t n : {size_t{0}, size_t{1}, size_t{300}}) {  // 300 = 4 full chunks of 64 + 44
    std::string p = dir.file("c" + std::to_string(n) + ".h5");
    CacheContents c = make_contents(n);
    write_cache_atomic(p, c);
    CacheContents r = read_cache(p);
    EXPECT_TRUE(same_contents(c, r)) << "N = " << n;
    EXPECT_EQ(r.size(), n);
  }
  // Only the final files: no temporaries left behind.
  EXPECT_EQ(list(dir.file("")), (std::vector<std::string>{"c0.h5", "c1.h5", "c300.h5"}));
}

TEST(CacheFile, LayoutDtypesAndShapes) {
  TempDir dir;
  for (size_t n : {size_t{0}, size_t{130}}) {
    std::string p = dir.file("layout.h5");
    write_cache_atomic(p, make_contents(n));
    H5File f = H5File::open_read(p);
    // `dtype` as h5_dtype_desc names it ("int32" is signed); `size` 0: any; strings: vlen ones
    // must be UTF-8.
    auto check = [&](const char* name, const char* dtype, size_t size, std::vector<hsize_t> dims) {
      SCOPED_TRACE(std::string(name) + " N=" + std::to_string(n));
      H5StorageInfo d = h5_dataset_info(f.id(), name, p);
      EXPECT_EQ(d.dtype, dtype);
      if (size) {
        EXPECT_EQ(d.type_size, size);
      }
      if (d.dtype == "vlen string") {
        EXPECT_TRUE(d.utf8);
      }
      EXPECT_EQ(d.dims, dims);
    };
    check("/features", "float32", 4, {n, kF});
    check("/paths", "vlen string", 0, {n});
    check("/sha256", "fixed string", 64, {n});
    check("/labels", "int32", 4, {n});
    check("/groups", "vlen string", 0, {n});
    check("/class_names", "vlen string", 0, {2});
    check("/skipped/paths", "vlen string", 0, {2});
    check("/skipped/reasons", "vlen string", 0, {2});
    H5StorageInfo features = h5_dataset_info(f.id(), "/features", p);
    EXPECT_EQ(features.chunk, (std::vector<hsize_t>{64, kF}));
    EXPECT_EQ(features.filters, std::vector<std::string>{"fletcher32"});
    // No modification times (they would make equal contents differ in bytes).
    for (const char* obj : {"/features", "/paths", "/sha256", "/labels", "/skipped"})
      EXPECT_FALSE(h5_has_times(f.id(), obj, p)) << obj;
    for (const char* a : {"format_version", "n_images", "feature_size"}) {
      EXPECT_EQ(h5_attr_type(f.id(), a, p), (std::pair<std::string, size_t>{"int64", 8})) << a;
    }
    EXPECT_EQ(h5_read_int_attr(f.id(), "format_version", p), kCacheFormatVersion);
    EXPECT_EQ(h5_read_int_attr(f.id(), "n_images", p), static_cast<int64_t>(n));
    EXPECT_EQ(h5_read_int_attr(f.id(), "feature_size", p), 2048);
    EXPECT_EQ(h5_read_string_attr(f.id(), "weights_sha256", p), settings_a().weights_sha256);
    EXPECT_EQ(h5_read_string_attr(f.id(), "preprocessing", p), settings_a().preprocessing);
    EXPECT_EQ(h5_read_string_attr(f.id(), "engine_version", p), settings_a().engine_version);
  }
}

TEST(CacheFile, WriteRefusesBadContentsAndLeavesTheOldFile) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  write_cache_atomic(p, make_contents(3));
  std::string before = read_bytes(p);
  CacheContents unsorted = make_contents(3);
  std::swap(unsorted.paths[0], unsorted.paths[2]);
  EXPECT_ONE_LINE_ERROR(error_of([&] { write_cache_atomic(p, unsorted); }), p, "/paths", "sorted");
  CacheContents nan = make_contents(3);
  nan.features[kF + 9] = std::nanf("");
  EXPECT_ONE_LINE_ERROR(error_of([&] { write_cache_atomic(p, nan); }), p, "/features", "row 1");
  CacheContents short_features = make_contents(3);
  short_features.features.resize(2 * kF);
  EXPECT_ONE_LINE_ERROR(error_of([&] { write_cache_atomic(p, short_features); }), p, "/features");
  EXPECT_EQ(read_bytes(p), before);
  EXPECT_EQ(list(dir.file("")), std::vector<std::string>{"c.h5"});
  EXPECT_ONE_LINE_ERROR(
      error_of([&] { write_cache_atomic(dir.file("no/such/dir.h5"), make_contents(1)); }),
      dir.file("no/such/dir.h5"));
}

namespace {
// Writes a 200-image cache at `p`, then flips a bit of one feature value's 4 bytes (found by
// value; they must be unique in the file) behind the writer's back.
void write_cache_with_a_flipped_feature_bit(const std::string& p) {
  CacheContents c = make_contents(200);
  write_cache_atomic(p, c);
  std::string bytes = read_bytes(p);
  std::string needle(reinterpret_cast<const char*>(&c.features[150 * kF + 100]), 4);
  size_t pos = bytes.find(needle);
  ASSERT_NE(pos, std::string::npos);
  ASSERT_EQ(bytes.find(needle, pos + 1), std::string::npos);
  bytes[pos + 1] ^= 0x04;
  write_bytes(p, bytes);
}
}  // namespace

TEST(CacheFile, FlippedFeatureBitFailsTheChecksum) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  ASSERT_NO_FATAL_FAILURE(write_cache_with_a_flipped_feature_bit(p));
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p, "H5Dread failed for '/features'");
}

TEST(CacheFile, FlippedFeatureBitIsFoundByOpenAndByMerge) {
  // The cache and merge no longer load features whole, but still check every chunk they read.
  TempDir dir;
  std::string p = dir.file("c.h5");
  ASSERT_NO_FATAL_FAILURE(write_cache_with_a_flipped_feature_bit(p));
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache cache(p, settings_a(), false); }), p,
                        "H5Dread failed for '/features'");
  EXPECT_ONE_LINE_ERROR(error_of([&] { merge_caches({p}, dir.file("m.h5")); }), p,
                        "H5Dread failed for '/features'");
  EXPECT_EQ(list(dir.file("")), (std::vector<std::string>{"c.h5", "c.h5.lock"}));
}

// ------------------------------------------------- bad files built with hdf5_io's typed writers
namespace {
// Writes a 4-image cache with hdf5_io's typed writers (contiguous datasets, default properties:
// not the cache's own writer), with one fault.
struct FileSpec {
  int64_t format_version = 1, feature_size_attr = kBottleneckSize;
  hsize_t feature_cols = kBottleneckSize;
  H5Type feature_type = H5Type::F32, label_type = H5Type::I32;
  bool nan = false, unsorted = false, bad_sha = false;
  int32_t label2 = 1;
  std::string omit;      // dataset not written
  std::string short_ds;  // dataset written with N - 1 entries
};
void build_file(const std::string& path, const FileSpec& s) {
  const hsize_t n = 4;
  H5File file = H5File::create(path);
  const hid_t f = file.id();
  auto len = [&](const std::string& ds) { return ds == s.short_ds ? n - 1 : n; };
  auto strings = [&](const std::string& ds, std::vector<std::string> v, size_t fixed) {
    if (ds == s.omit) return;
    if (ds == s.short_ds) v.pop_back();
    h5_write_strings(f, ds, v, fixed, path);
  };
  std::vector<std::string> paths{"a.jpg", "b.jpg", "c.jpg", "d.jpg"}, shas;
  if (s.unsorted) std::swap(paths[1], paths[2]);
  for (auto& p : paths) shas.push_back(content_sha(p, 0));
  if (s.bad_sha) shas[1][10] = 'G';
  strings("/paths", paths, 0);
  strings("/sha256", shas, 64);
  strings("/groups", {"x", "x", "y", ""}, 0);
  strings("/class_names", {"benign", "malignant"}, 0);
  h5_create_group(f, "/skipped", path);
  strings("/skipped/paths", {"e.jpg"}, 0);
  strings("/skipped/reasons", {"bad"}, 0);
  if (s.omit != "/labels") {
    std::vector<int32_t> labels{0, 1, s.label2, -1};
    h5_write_ints(f, "/labels", labels.data(), {len("/labels")}, path, {}, s.label_type);
  }
  if (s.omit != "/features") {
    std::vector<float> feats(n * s.feature_cols);
    for (size_t i = 0; i < feats.size(); ++i) feats[i] = static_cast<float>(i % 97) * 0.25f;
    if (s.nan) feats[2 * s.feature_cols + 5] = std::nanf("");
    h5_write_floats(f, "/features", feats.data(), {len("/features"), s.feature_cols}, path, {},
                    s.feature_type);
  }
  h5_write_int_attr(f, "format_version", s.format_version, path);
  h5_write_int_attr(f, "feature_size", s.feature_size_attr, path);
  h5_write_int_attr(f, "n_images", 4, path);
  h5_write_string_attr(f, "weights_sha256", settings_a().weights_sha256, path);
  h5_write_string_attr(f, "preprocessing", settings_a().preprocessing, path);
  h5_write_string_attr(f, "engine_version", "hdf5_io typed writers", path);
  file.close();
}
}  // namespace

TEST(CacheRead, RejectsBadFilesWithOneLine) {
  TempDir dir;
  std::string p = dir.file("bad.h5");
  build_file(p, {});
  CacheContents good = read_cache(p);  // the unmodified file is accepted, so each fault counts
  ASSERT_EQ(good.size(), 4u);
  EXPECT_EQ(good.labels, (std::vector<int32_t>{0, 1, 1, -1}));
  EXPECT_EQ(good.features[2 * kF + 5], static_cast<float>((2 * kF + 5) % 97) * 0.25f);
  EXPECT_EQ(good.skipped.size(), 1u);
  auto bad = [&](FileSpec s, std::vector<std::string> parts) {
    build_file(p, s);
    parts.push_back(p);
    std::string msg = error_of([&] { read_cache(p); });
    EXPECT_FALSE(msg.empty()) << parts[0];
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  FileSpec s;
  s.feature_size_attr = 1024, s.feature_cols = 1024;
  bad(s, {"feature_size", "expected 2048, found 1024"});
  s = {}, s.feature_cols = 1024;
  bad(s, {"/features", "expected shape (4, 2048), found (4, 1024)"});
  s = {}, s.nan = true;
  bad(s, {"/features", "non-finite", "row 2", "column 5"});
  s = {}, s.label2 = 2;
  bad(s, {"/labels", "label 2 out of range [-1, 2)"});
  s = {}, s.label2 = -2;
  bad(s, {"/labels", "label -2"});
  s = {}, s.label_type = H5Type::F32;
  bad(s, {"/labels", "expected int32, found float32"});
  s = {}, s.feature_type = H5Type::F64;
  bad(s, {"/features", "expected float32, found float64"});
  s = {}, s.format_version = 3;
  bad(s, {"format_version", "expected 1 or 2, found 3"});
  s = {}, s.format_version = 2;  // reduced precision, but no `precision` attribute: fp32
  bad(s, {"format_version' is 2 but 'precision' is fp32"});
  s = {}, s.unsorted = true;
  bad(s, {"/paths", "not sorted"});
  s = {}, s.bad_sha = true;
  bad(s, {"/sha256", "hex"});
  for (const char* ds : {"/features", "/paths", "/sha256", "/labels", "/groups", "/class_names",
                         "/skipped/paths", "/skipped/reasons"}) {
    s = {}, s.omit = ds;
    bad(s, {std::string("missing dataset '") + ds + "'"});
  }
  s = {}, s.short_ds = "/labels";
  bad(s, {"/labels", "expected shape (4,), found (3,)"});
  s = {}, s.short_ds = "/sha256";
  bad(s, {"/sha256", "expected shape (4,), found (3,)"});
  s = {}, s.short_ds = "/features";
  bad(s, {"/features", "expected shape (4, 2048), found (3, 2048)"});
  s = {}, s.short_ds = "/paths";
  bad(s, {"n_images", "/paths"});
  s = {}, s.short_ds = "/skipped/reasons";
  bad(s, {"/skipped/reasons", "expected shape (1,), found (0,)"});
}
