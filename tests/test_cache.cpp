// tests/test_cache.cpp: the bottleneck cache (engine/bottleneck_cache.h, layout weights/CACHE.md).
// SHA-256 against the FIPS 180-4 vectors; HDF5 round trips (N = 0, 1, 300) checked bitwise and
// with the HDF5 C API (dtypes, shapes, chunking); crash recovery: a forked child is SIGKILLed at
// every durable step (after appends, mid piece write, before and after the piece rename, before
// and after the consolidated rename, half-way through the journal deletion) and a rerun must end
// with exactly the features of an uninterrupted run (memcmp); settings checks, the lock, corrupt
// files and journal pieces, finalize semantics, merges, and bad files built with the C API.
// Run: ./test_cache (writes only under ::testing::TempDir()); it prints the 10k-image timings.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <sstream>

#include "engine/bottleneck_cache.h"
#include "engine/error.h"
#include "test_util.h"

using namespace engine;

namespace {

constexpr size_t kF = static_cast<size_t>(kCacheFeatureSize);

// A fresh directory under TempDir(), removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "cache_test_XXXXXX";
    if (!mkdtemp(&tmpl[0])) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    nftw(
        path_.c_str(), [](const char* p, const struct stat*, int, FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& p, const std::string& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
}
std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Runs `fn` and returns the engine::Error message ("" when nothing was thrown).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
#define EXPECT_ONE_LINE_ERROR(msg, ...)                                                   \
  do {                                                                                    \
    std::string m_ = (msg);                                                               \
    EXPECT_FALSE(m_.empty()) << "no error thrown";                                        \
    EXPECT_EQ(m_.find('\n'), std::string::npos) << m_;                                    \
    for (const std::string& part_ : std::vector<std::string>{__VA_ARGS__})                \
      EXPECT_NE(m_.find(part_), std::string::npos) << "'" << part_ << "' not in: " << m_; \
  } while (0)

CacheSettings settings_a() {
  return {sha256_hex(reinterpret_cast<const uint8_t*>("weights A"), 9),
          "size=299;resize=antialias;dct_min_side=299;scale=x/127.5-1", "test 1.0"};
}
CacheSettings settings_b() {
  CacheSettings s = settings_a();
  s.weights_sha256 = sha256_hex(reinterpret_cast<const uint8_t*>("weights B"), 9);
  return s;
}

// Deterministic stand-ins for extraction: the "image bytes" are path + version.
std::string content_sha(const std::string& path, int version) {
  std::string bytes = path + "#" + std::to_string(version);
  return sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}
std::vector<float> feature_for(const std::string& path, int version) {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(path)) + 977u * version);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> f(kF);
  for (float& v : f) v = dist(rng);
  // Bit patterns a lossy path would change: signed zero, a subnormal, the largest float.
  f[0] = -0.0f, f[1] = 1e-40f, f[2] = std::numeric_limits<float>::max();
  return f;
}
CacheFeature make_feature(const std::string& path, int version = 0) {
  return {path, content_sha(path, version), feature_for(path, version)};
}

// A listing of images in directory (unsorted) order, as tools/extract sees it.
struct Listing {
  std::vector<ImageMeta> images;
  std::vector<int> version;
  std::vector<std::string> class_names{"benign", "malignant", "unknown"};
  std::vector<SkippedFile> skipped{{"z/bad.jpg", "not a JPEG"}, {"a/empty.jpg", "empty file"}};
  size_t batch = 7;
  size_t batches() const { return (images.size() + batch - 1) / batch; }
};
Listing make_listing(size_t n = 35) {
  Listing l;
  std::mt19937 rng(7);
  std::vector<size_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  for (size_t id : ids) {
    char name[64];
    std::snprintf(name, sizeof name, "%s/ISIC_%07zu.jpg", id % 2 ? "train" : "val", id * 37);
    l.images.push_back(
        {name, static_cast<int32_t>(id % 4) - 1, "lesion_" + std::to_string(id / 3)});
    l.version.push_back(0);
  }
  return l;
}

// What tools/extract does for batches [0, max_batches): extract only what the cache lacks.
void extract(BottleneckCache& cache, const Listing& l, size_t max_batches = SIZE_MAX) {
  for (size_t b = 0; b < std::min(max_batches, l.batches()); ++b) {
    std::vector<CacheFeature> pending;
    for (size_t i = b * l.batch; i < std::min(l.images.size(), (b + 1) * l.batch); ++i)
      if (!cache.has(l.images[i].path, content_sha(l.images[i].path, l.version[i])))
        pending.push_back(make_feature(l.images[i].path, l.version[i]));
    cache.append(pending);
  }
}
CacheContents run_to_end(const std::string& path, const Listing& l,
                         const CacheSettings& s = settings_a(), bool force = false) {
  BottleneckCache cache(path, s, force);
  extract(cache, l);
  cache.finalize(l.images, l.class_names, l.skipped);
  return read_cache(path);
}

::testing::AssertionResult same_contents(const CacheContents& a, const CacheContents& b) {
  auto fail = [](const char* what) { return ::testing::AssertionFailure() << what << " differ"; };
  if (a.settings.weights_sha256 != b.settings.weights_sha256 ||
      a.settings.preprocessing != b.settings.preprocessing ||
      a.settings.engine_version != b.settings.engine_version)
    return fail("settings");
  if (a.class_names != b.class_names) return fail("class_names");
  if (a.paths != b.paths) return fail("paths");
  if (a.sha256 != b.sha256) return fail("sha256");
  if (a.labels != b.labels) return fail("labels");
  if (a.groups != b.groups) return fail("groups");
  if (a.skipped.size() != b.skipped.size()) return fail("skipped lists");
  for (size_t i = 0; i < a.skipped.size(); ++i)
    if (a.skipped[i].path != b.skipped[i].path || a.skipped[i].reason != b.skipped[i].reason)
      return fail("skipped entries");
  if (a.features.size() != b.features.size()) return fail("feature counts");
  if (!a.features.empty() &&
      std::memcmp(a.features.data(), b.features.data(), a.features.size() * sizeof(float)) != 0)
    return fail("feature bits");
  return ::testing::AssertionSuccess();
}

// Runs `body` in a forked child (which never returns into gtest) and returns its wait status;
// `crash_at` is armed by the child itself with arm() at the moment it chooses.
int run_child(const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}
void arm(const char* point) { setenv("ENGINE_CACHE_CRASH_AT", point, 1); }
bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

}  // namespace

// ------------------------------------------------------------------------------------ SHA-256
TEST(Sha256, FipsVectors) {
  auto h = [](const std::string& s) {
    return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(h(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(h("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(h("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(h("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklm"
              "nopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(h(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the 56-byte padding limit and the 64-byte block (values from Python hashlib).
  const std::pair<size_t, const char*> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"}};
  for (auto [n, want] : cases) {
    std::string s(n, 'a');
    EXPECT_EQ(sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), n), want) << "length " << n;
  }
}

TEST(Sha256, FileIsStreamedAcrossReadBoundaries) {
  TempDir dir;
  std::string bytes(3 * (1 << 20) + 17, '\0');  // three full 1 MiB reads and a tail
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i % 251);
  write_bytes(dir.file("img.bin"), bytes);
  EXPECT_EQ(sha256_file(dir.file("img.bin")),
            "fe2aaf82bfa2ffec207a0c6fa7ce7d4af268d67e2672fdaec675f3f9b65d0854");  // hashlib
  write_bytes(dir.file("a.bin"), std::string(1000000, 'a'));
  EXPECT_EQ(sha256_file(dir.file("a.bin")),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_ONE_LINE_ERROR(error_of([&] { sha256_file(dir.file("missing.jpg")); }),
                        dir.file("missing.jpg"));
}

// --------------------------------------------------------------------------- HDF5 round trip
namespace {
CacheContents make_contents(size_t n) {
  CacheContents c;
  c.settings = settings_a();
  c.class_names = {"benign", "malignant"};
  for (size_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img_%05zu.jpg", i);  // zero-padded: already sorted
    CacheFeature f = make_feature(name);
    c.paths.push_back(name);
    c.sha256.push_back(f.sha256);
    c.labels.push_back(static_cast<int32_t>(i % 3) - 1);
    c.groups.push_back(i % 5 ? "g" + std::to_string(i / 2) : "");
    c.features.insert(c.features.end(), f.feature.begin(), f.feature.end());
  }
  c.skipped = {{"broken.jpg", "truncated JPEG"}, {"ünïcode/ß.png", "PNG: bad CRC"}};
  return c;
}
}  // namespace

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
    auto check = [&](const char* name, H5T_class_t cls, size_t size, std::vector<hsize_t> dims) {
      SCOPED_TRACE(std::string(name) + " N=" + std::to_string(n));
      H5Id d(H5Dopen2(f.id(), name, H5P_DEFAULT));
      ASSERT_TRUE(d.valid());
      H5Id t(H5Dget_type(d.get())), s(H5Dget_space(d.get()));
      EXPECT_EQ(H5Tget_class(t.get()), cls);
      if (size) {
        EXPECT_EQ(H5Tget_size(t.get()), size);
      }
      if (cls == H5T_STRING) {
        EXPECT_EQ(H5Tis_variable_str(t.get()) > 0, size == 0);
      }
      if (cls == H5T_STRING && size == 0) {
        EXPECT_EQ(H5Tget_cset(t.get()), H5T_CSET_UTF8);
      }
      if (cls == H5T_INTEGER) {
        EXPECT_EQ(H5Tget_sign(t.get()), H5T_SGN_2);
      }
      std::vector<hsize_t> got(dims.size());
      ASSERT_EQ(H5Sget_simple_extent_ndims(s.get()), static_cast<int>(dims.size()));
      H5Sget_simple_extent_dims(s.get(), got.data(), nullptr);
      EXPECT_EQ(got, dims);
    };
    check("/features", H5T_FLOAT, 4, {n, kF});
    check("/paths", H5T_STRING, 0, {n});
    check("/sha256", H5T_STRING, 64, {n});
    check("/labels", H5T_INTEGER, 4, {n});
    check("/groups", H5T_STRING, 0, {n});
    check("/class_names", H5T_STRING, 0, {2});
    check("/skipped/paths", H5T_STRING, 0, {2});
    check("/skipped/reasons", H5T_STRING, 0, {2});
    H5Id d(H5Dopen2(f.id(), "/features", H5P_DEFAULT));
    H5Id dcpl(H5Dget_create_plist(d.get()));
    hsize_t chunk[2] = {0, 0};
    EXPECT_EQ(H5Pget_layout(dcpl.get()), H5D_CHUNKED);
    EXPECT_EQ(H5Pget_chunk(dcpl.get(), 2, chunk), 2);
    EXPECT_EQ(chunk[0], 64u);
    EXPECT_EQ(chunk[1], kF);
    unsigned flags = 0, cd[4] = {};
    size_t ncd = 4;
    ASSERT_EQ(H5Pget_nfilters(dcpl.get()), 1);
    EXPECT_EQ(H5Pget_filter2(dcpl.get(), 0, &flags, &ncd, cd, 0, nullptr, nullptr),
              H5Z_FILTER_FLETCHER32);
    // No modification times (they would make equal contents differ in bytes).
    for (const char* obj : {"/features", "/paths", "/sha256", "/labels", "/skipped"}) {
      H5O_info_t info{};
      ASSERT_GE(H5Oget_info_by_name2(f.id(), obj, &info, H5O_INFO_TIME, H5P_DEFAULT), 0);
      EXPECT_EQ(info.mtime, 0) << obj;
      EXPECT_EQ(info.ctime, 0) << obj;
    }
    for (const char* a : {"format_version", "n_images", "feature_size"}) {
      H5Id attr(H5Aopen(f.id(), a, H5P_DEFAULT));
      H5Id t(H5Aget_type(attr.get()));
      EXPECT_EQ(H5Tget_class(t.get()), H5T_INTEGER) << a;
      EXPECT_EQ(H5Tget_size(t.get()), 8u) << a;
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

TEST(CacheFile, FlippedFeatureBitFailsTheChecksum) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  CacheContents c = make_contents(200);
  write_cache_atomic(p, c);
  std::string bytes = read_bytes(p);
  // Find one feature value's 4 bytes (unique in the file) and flip a bit of it.
  std::string needle(reinterpret_cast<const char*>(&c.features[150 * kF + 100]), 4);
  size_t pos = bytes.find(needle);
  ASSERT_NE(pos, std::string::npos);
  ASSERT_EQ(bytes.find(needle, pos + 1), std::string::npos);
  bytes[pos + 1] ^= 0x04;
  write_bytes(p, bytes);
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p, "H5Dread failed for '/features'");
}

TEST(CacheFile, FlippedFeatureBitIsFoundByOpenAndByMerge) {
  // The cache and merge no longer load features whole, but still check every chunk they read.
  TempDir dir;
  std::string p = dir.file("c.h5");
  CacheContents c = make_contents(200);
  write_cache_atomic(p, c);
  std::string bytes = read_bytes(p);
  std::string needle(reinterpret_cast<const char*>(&c.features[150 * kF + 100]), 4);
  size_t pos = bytes.find(needle);
  ASSERT_NE(pos, std::string::npos);
  bytes[pos + 1] ^= 0x04;
  write_bytes(p, bytes);
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache cache(p, settings_a(), false); }), p,
                        "H5Dread failed for '/features'");
  EXPECT_ONE_LINE_ERROR(error_of([&] { merge_caches({p}, dir.file("m.h5")); }), p,
                        "H5Dread failed for '/features'");
  EXPECT_EQ(list(dir.file("")), (std::vector<std::string>{"c.h5", "c.h5.lock"}));
}

// ------------------------------------------------------------------------- crash recovery
class CacheCrash : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("ENGINE_CACHE_CRASH_AT");
    reference_ = run_to_end(dir_.file("reference.h5"), listing_);
    ASSERT_EQ(reference_.size(), listing_.images.size());
  }
  // Child: open the cache, append `appends` batches, arm `point`, run `then`; must die by SIGKILL.
  void crash(size_t appends, const char* point, const std::function<void(BottleneckCache&)>& then) {
    int status = run_child([&] {
      BottleneckCache cache(path_, settings_a(), false);
      extract(cache, listing_, appends);
      arm(point);
      then(cache);
    });
    ASSERT_TRUE(killed(status)) << "child status " << status << " at " << point;
  }
  size_t images_in_batches(size_t b) const {
    return std::min(listing_.images.size(), b * listing_.batch);
  }
  void expect_resumes_to_reference(size_t durable_images) {
    {
      BottleneckCache cache(path_, settings_a(), false);
      EXPECT_EQ(cache.cached(), durable_images);
      for (size_t i = 0; i < listing_.images.size(); ++i)
        EXPECT_EQ(cache.has(listing_.images[i].path, content_sha(listing_.images[i].path, 0)),
                  i < durable_images)
            << listing_.images[i].path;
    }
    EXPECT_TRUE(same_contents(run_to_end(path_, listing_), reference_));
    EXPECT_FALSE(exists(path_ + ".journal"));
    EXPECT_EQ(list(dir_.file("")), (std::vector<std::string>{"cache.h5", "cache.h5.lock",
                                                             "reference.h5", "reference.h5.lock"}));
  }
  TempDir dir_;
  Listing listing_ = make_listing();
  std::string path_ = dir_.file("cache.h5");
  CacheContents reference_;
};

TEST_F(CacheCrash, KilledBetweenAppends) {
  for (size_t k : {size_t{0}, size_t{2}, size_t{5}}) {
    SCOPED_TRACE("killed after " + std::to_string(k) + " appends");
    std::remove(path_.c_str());  // each round starts from an empty cache
    crash(k, "none", [](BottleneckCache&) { raise(SIGKILL); });
    {
      BottleneckCache cache(path_, settings_a(), false);
      EXPECT_EQ(cache.journal_pieces(), k);
    }
    expect_resumes_to_reference(images_in_batches(k));
  }
}

TEST_F(CacheCrash, KilledInTheMiddleOfWritingAPiece) {
  crash(2, "piece:mid_write", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  std::string tmp = path_ + ".journal/piece-0000000000000003.bin.tmp";
  ASSERT_TRUE(exists(tmp));  // the half-written piece is there, under its temporary name only
  EXPECT_FALSE(exists(path_ + ".journal/piece-0000000000000003.bin"));
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 2u);
    EXPECT_FALSE(exists(tmp)) << "leftover temporaries are deleted";
  }
  expect_resumes_to_reference(images_in_batches(2));
}

TEST_F(CacheCrash, KilledBeforeThePieceRename) {
  crash(2, "piece:tmp_written", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  EXPECT_TRUE(exists(path_ + ".journal/piece-0000000000000003.bin.tmp"));
  expect_resumes_to_reference(images_in_batches(2));
}

TEST_F(CacheCrash, KilledAfterThePieceRename) {
  crash(2, "piece:renamed", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  expect_resumes_to_reference(images_in_batches(3));
}

TEST_F(CacheCrash, KilledBeforeTheConsolidatedRename) {
  crash(5, "consolidated:tmp_written", [&](BottleneckCache& c) {
    c.finalize(listing_.images, listing_.class_names, listing_.skipped);
  });
  EXPECT_FALSE(exists(path_)) << "nothing may appear under the final name before the rename";
  size_t tmps = 0;
  for (const std::string& n : list(dir_.file(""))) tmps += n.rfind("cache.h5.tmp.", 0) == 0;
  EXPECT_EQ(tmps, 1u);
  expect_resumes_to_reference(listing_.images.size());  // also checks the temporary is gone
}

TEST_F(CacheCrash, KilledAfterTheConsolidatedRename) {
  crash(5, "consolidated:renamed", [&](BottleneckCache& c) {
    c.finalize(listing_.images, listing_.class_names, listing_.skipped);
  });
  EXPECT_TRUE(same_contents(read_cache(path_), reference_));
  EXPECT_EQ(list(path_ + ".journal").size(), 5u);
  expect_resumes_to_reference(listing_.images.size());
}

TEST_F(CacheCrash, KilledHalfWayThroughTheJournalDeletion) {
  crash(5, "journal:partly_deleted", [&](BottleneckCache& c) {
    c.finalize(listing_.images, listing_.class_names, listing_.skipped);
  });
  EXPECT_TRUE(same_contents(read_cache(path_), reference_));
  EXPECT_EQ(list(path_ + ".journal").size(), 4u);
  expect_resumes_to_reference(listing_.images.size());
}

TEST_F(CacheCrash, SecondRunOverAConsolidatedCacheWithAChangedImage) {
  Listing first = listing_;
  first.images.resize(14), first.version.resize(14);
  run_to_end(path_, first);
  Listing changed = listing_;
  changed.version[3] = 1;  // same path, new bytes: must be extracted again
  crash(0, "piece:renamed", [&](BottleneckCache& c) { extract(c, changed); });
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 1u);
    EXPECT_TRUE(cache.has(changed.images[3].path, content_sha(changed.images[3].path, 1)));
    EXPECT_FALSE(cache.has(changed.images[3].path, content_sha(changed.images[3].path, 0)));
    EXPECT_EQ(cache.cached(), 14u);  // only the changed image went to the first piece
  }
  TempDir ref_dir;
  CacheContents want = run_to_end(ref_dir.file("ref.h5"), changed);
  EXPECT_TRUE(same_contents(run_to_end(path_, changed), want));
  EXPECT_FALSE(same_contents(want, reference_));
}

TEST_F(CacheCrash, LaterPieceWinsOnReplay) {
  const std::string& img = listing_.images[0].path;
  ASSERT_TRUE(killed(run_child([&] {
    BottleneckCache cache(path_, settings_a(), false);
    cache.append({make_feature(img, 1)});
    cache.append({make_feature(img, 2)});  // the image changed during the run
    cache.append({make_feature(img, 1)});
    cache.append({make_feature(img, 3)});
    raise(SIGKILL);
  })));
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 4u);
    EXPECT_EQ(cache.cached(), 1u);
    EXPECT_TRUE(cache.has(img, content_sha(img, 3)));
    EXPECT_FALSE(cache.has(img, content_sha(img, 1)));
  }
  // Killed after the first journal piece is deleted: the pieces left must still replay to v3.
  crash(0, "journal:partly_deleted",
        [&](BottleneckCache& c) { c.finalize({listing_.images[0]}, listing_.class_names, {}); });
  BottleneckCache cache(path_, settings_a(), false);
  EXPECT_EQ(cache.journal_pieces(), 3u);
  EXPECT_TRUE(cache.has(img, content_sha(img, 3)));
  cache.finalize({listing_.images[0]}, listing_.class_names, {});
  CacheContents r = read_cache(path_);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(std::memcmp(r.features.data(), feature_for(img, 3).data(), kF * 4), 0);
}

// ------------------------------------------------------------------- settings, lock, corruption
TEST(CacheOpen, SettingsMismatchIsRefusedUnlessForced) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(10);
  run_to_end(p, l, settings_a());
  std::string msg = error_of([&] { BottleneckCache c(p, settings_b(), false); });
  EXPECT_ONE_LINE_ERROR(msg, p, settings_a().weights_sha256, settings_b().weights_sha256,
                        "--force");
  CacheSettings other_pre = settings_a();
  other_pre.preprocessing = "size=299;resize=bilinear";
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, other_pre, false); }), "bilinear",
                        "--force");
  CacheSettings other_version = settings_a();
  other_version.engine_version = "test 2.0";  // informational only
  {
    BottleneckCache c(p, other_version, false);
    EXPECT_EQ(c.cached(), 10u);
  }
  {
    BottleneckCache c(p, settings_b(), true);
    EXPECT_EQ(c.cached(), 0u);
    EXPECT_FALSE(exists(p)) << "force discards the old cache at once";
  }
  CacheContents r = run_to_end(p, l, settings_b());
  EXPECT_EQ(r.settings.weights_sha256, settings_b().weights_sha256);
  EXPECT_EQ(r.size(), 10u);
}

TEST(CacheOpen, JournalFromOtherSettingsIsRefusedUnlessForced) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(14);
  int st = run_child([&] {
    BottleneckCache c(p, settings_a(), false);
    extract(c, l);
    raise(SIGKILL);
  });
  ASSERT_TRUE(killed(st));
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_b(), false); }),
                        "piece-0000000000000001.bin", settings_a().weights_sha256, "--force");
  BottleneckCache c(p, settings_b(), true);
  EXPECT_EQ(c.cached(), 0u);
  EXPECT_FALSE(exists(p + ".journal"));
}

TEST(CacheOpen, LockHeldByAnotherProcessIsRefused) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  for (bool kill_holder : {false, true}) {
    int ready[2], go[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      BottleneckCache holder(p, settings_a(), false);
      char b = 1;
      if (write(ready[1], &b, 1) != 1) _exit(2);
      if (read(go[0], &b, 1) < 0) _exit(2);  // hold the lock until the parent says so
      _exit(0);
    }
    char b = 0;
    ASSERT_EQ(read(ready[0], &b, 1), 1);
    EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_a(), false); }), p,
                          "is in use by another extract process");
    if (kill_holder)
      kill(pid, SIGKILL);  // a killed holder releases the lock with its process
    else
      EXPECT_EQ(write(go[1], &b, 1), 1);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT_EQ(error_of([&] { BottleneckCache c(p, settings_a(), false); }), "");
    for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
  }
}

TEST(CacheOpen, CorruptConsolidatedFileIsOneLine) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  run_to_end(p, make_listing(20));
  std::string bytes = read_bytes(p);
  write_bytes(p, bytes.substr(0, bytes.size() / 2));
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p);
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_a(), false); }), p);
  write_bytes(p, "this is not HDF5, just text\n");
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p, "not an HDF5 file");
  {
    BottleneckCache c(p, settings_a(), true);
    EXPECT_EQ(c.cached(), 0u);
  }
  EXPECT_EQ(run_to_end(p, make_listing(20)).size(), 20u);
}

TEST(CacheOpen, CorruptJournalPieceIsIgnoredWithAWarning) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(35);
  ASSERT_TRUE(killed(run_child([&] {
    BottleneckCache c(p, settings_a(), false);
    extract(c, l);
    raise(SIGKILL);
  })));
  std::string piece2 = p + ".journal/piece-0000000000000002.bin";
  std::string piece5 = p + ".journal/piece-0000000000000005.bin";
  std::string b = read_bytes(piece2);
  b[b.size() / 2] ^= 0x10;  // one bit in a feature
  write_bytes(piece2, b);
  std::string b5 = read_bytes(piece5);
  write_bytes(piece5, b5.substr(0, b5.size() - 100));  // short piece
  ::testing::internal::CaptureStderr();
  size_t cached = 0, pieces = 0;
  std::vector<bool> present;
  {
    BottleneckCache c(p, settings_a(), false);
    cached = c.cached(), pieces = c.journal_pieces();
    for (size_t i = 0; i < l.images.size(); ++i)
      present.push_back(c.has(l.images[i].path, content_sha(l.images[i].path, 0)));
  }
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: " + piece2 + ": journal piece ignored (checksum"), std::string::npos)
      << err;
  EXPECT_NE(err.find(piece5), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2);
  EXPECT_EQ(pieces, 3u);
  EXPECT_EQ(cached, 21u);
  for (size_t i = 0; i < l.images.size(); ++i)
    EXPECT_EQ(present[i], !(i / 7 == 1 || i / 7 == 4)) << i;
  TempDir ref;
  EXPECT_TRUE(same_contents(run_to_end(p, l), run_to_end(ref.file("r.h5"), l)));
}

// ------------------------------------------------------------------------ finalize and merge
TEST(CacheFinalize, DropsDeletedImagesAndTakesNewLabels) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(21);
  run_to_end(p, l);
  Listing now;
  now.class_names = {"benign", "malignant"};
  now.skipped = {};
  for (size_t i = 0; i < l.images.size(); ++i)
    if (i % 3 != 0) now.images.push_back({l.images[i].path, static_cast<int32_t>(i % 2), "new"});
  {
    BottleneckCache c(p, settings_a(), false);
    std::vector<ImageMeta> with_unknown = now.images;
    with_unknown.push_back({"never/extracted.jpg", 0, ""});
    EXPECT_ONE_LINE_ERROR(error_of([&] { c.finalize(with_unknown, now.class_names, {}); }),
                          "never/extracted.jpg", "no cached feature");
    std::vector<ImageMeta> twice = now.images;
    twice.push_back(now.images[0]);
    EXPECT_ONE_LINE_ERROR(error_of([&] { c.finalize(twice, now.class_names, {}); }), "twice");
    c.finalize(now.images, now.class_names, {});
  }
  CacheContents r = read_cache(p);
  ASSERT_EQ(r.size(), 14u);
  EXPECT_EQ(r.class_names, now.class_names);
  EXPECT_TRUE(r.skipped.empty());
  for (size_t i = 0; i < r.size(); ++i) {
    auto it = std::find_if(now.images.begin(), now.images.end(),
                           [&](const ImageMeta& m) { return m.path == r.paths[i]; });
    ASSERT_NE(it, now.images.end()) << r.paths[i];
    EXPECT_EQ(r.labels[i], it->label);
    EXPECT_EQ(r.groups[i], "new");
    EXPECT_EQ(std::memcmp(&r.features[i * kF], feature_for(r.paths[i], 0).data(), kF * 4), 0);
    if (i > 0) {
      EXPECT_LT(r.paths[i - 1], r.paths[i]);
    }
  }
  BottleneckCache c(p, settings_a(), false);
  EXPECT_EQ(c.cached(), 14u);
}

TEST(CacheMerge, EqualsASingleRunAndRejectsConflicts) {
  TempDir dir;
  Listing l = make_listing(40);
  CacheContents single = run_to_end(dir.file("single.h5"), l);
  Listing shard[2];
  for (size_t i = 0; i < l.images.size(); ++i) {
    shard[i % 2].images.push_back(l.images[i]);
    shard[i % 2].version.push_back(0);
  }
  shard[0].skipped = {l.skipped[0]};
  shard[1].skipped = {l.skipped[1]};
  run_to_end(dir.file("s0.h5"), shard[0]);
  run_to_end(dir.file("s1.h5"), shard[1]);
  merge_caches({dir.file("s1.h5"), dir.file("s0.h5")}, dir.file("merged.h5"));
  EXPECT_TRUE(same_contents(read_cache(dir.file("merged.h5")), single));
  // No timestamps in the file: the same contents are the same bytes.
  EXPECT_EQ(read_bytes(dir.file("merged.h5")), read_bytes(dir.file("single.h5")));

  Listing overlap = shard[1];
  overlap.images.push_back(shard[0].images[4]);
  overlap.version.push_back(0);
  run_to_end(dir.file("overlap.h5"), overlap);
  EXPECT_ONE_LINE_ERROR(
      error_of([&] {
        merge_caches({dir.file("s0.h5"), dir.file("overlap.h5")}, dir.file("m2.h5"));
      }),
      dir.file("s0.h5"), dir.file("overlap.h5"), shard[0].images[4].path);
  run_to_end(dir.file("other.h5"), shard[1], settings_b());
  EXPECT_ONE_LINE_ERROR(
      error_of([&] {
        merge_caches({dir.file("s0.h5"), dir.file("other.h5")}, dir.file("m2.h5"));
      }),
      dir.file("s0.h5"), dir.file("other.h5"), settings_b().weights_sha256);
  Listing classes = shard[1];
  classes.class_names = {"nevus", "melanoma", "unknown"};
  run_to_end(dir.file("classes.h5"), classes);
  EXPECT_ONE_LINE_ERROR(
      error_of([&] {
        merge_caches({dir.file("s0.h5"), dir.file("classes.h5")}, dir.file("m2.h5"));
      }),
      dir.file("classes.h5"), "class_names", "melanoma");
  EXPECT_FALSE(exists(dir.file("m2.h5")));
}

// ------------------------------------------------------------------------------ memory bound
namespace {
// Listing `l` extracted in pieces of `batch` images, in listing (not path) order.
void append_in_batches(BottleneckCache& cache, const Listing& l, size_t from, size_t to,
                       size_t batch) {
  for (size_t b = from; b < to; b += batch) {
    std::vector<CacheFeature> pending;
    for (size_t i = b; i < std::min(to, b + batch); ++i)
      pending.push_back(make_feature(l.images[i].path, l.version[i]));
    cache.append(pending);
  }
}
}  // namespace

// finalize and merge_caches hold a fixed amount of feature data whatever N is: the cache keeps
// only an index (path -> hash, row or piece offset) and streams the features chunk by chunk.
TEST(CacheMemory, FinalizeAndMergeHoldTheSameFewChunksForAnyN) {
  constexpr size_t kBound = 2 * 64 * kF * sizeof(float);  // two 64-row chunks: 1 MiB
  std::vector<size_t> run1_peaks, final_peaks, merge_peaks;
  for (size_t n : {size_t{200}, size_t{2000}}) {
    SCOPED_TRACE("N = " + std::to_string(n));
    TempDir dir;
    std::string p = dir.file("c.h5");
    Listing l = make_listing(n);
    l.batch = 50;
    // Run 1: the first half, extracted and finalized: a consolidated file of n / 2 rows.
    Listing first = l;
    first.images.resize(n / 2), first.version.resize(n / 2);
    {
      BottleneckCache cache(p, settings_a(), false);
      append_in_batches(cache, first, 0, first.images.size(), l.batch);
      cache.finalize(first.images, first.class_names, first.skipped);
      run1_peaks.push_back(cache.peak_feature_bytes());
    }
    // Run 2: the second half in journal pieces, and every 10th image of the first half changed
    // (a piece that must win over the consolidated row); then finalize all n.
    Listing changed;
    for (size_t i = 0; i < n / 2; i += 10) {
      l.version[i] = 1;
      changed.images.push_back(l.images[i]);
      changed.version.push_back(1);
    }
    std::string before;
    {
      BottleneckCache cache(p, settings_a(), false);
      EXPECT_EQ(cache.cached(), n / 2);
      append_in_batches(cache, l, n / 2, n, l.batch);
      append_in_batches(cache, changed, 0, changed.images.size(), l.batch);
      cache.finalize(l.images, l.class_names, l.skipped);
      final_peaks.push_back(cache.peak_feature_bytes());
      EXPECT_EQ(cache.cached(), n);
      // The index now points into the new file: finalizing again gives the same bytes.
      before = read_bytes(p);
      cache.finalize(l.images, l.class_names, l.skipped);
      EXPECT_EQ(read_bytes(p), before);
      EXPECT_EQ(cache.peak_feature_bytes(), final_peaks.back());
    }
    CacheContents r = read_cache(p);
    ASSERT_EQ(r.size(), n);
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < n; ++i) index[l.images[i].path] = i;
    for (size_t i = 0; i < n; ++i) {
      size_t k = index.at(r.paths[i]);
      EXPECT_EQ(r.sha256[i], content_sha(r.paths[i], l.version[k])) << r.paths[i];
      EXPECT_EQ(r.labels[i], l.images[k].label);
      ASSERT_EQ(std::memcmp(&r.features[i * kF], feature_for(r.paths[i], l.version[k]).data(),
                            kF * sizeof(float)),
                0)
          << r.paths[i];
    }
    // A fresh single run over the same listing writes the same bytes.
    EXPECT_EQ(read_bytes(p), read_bytes([&] {
                run_to_end(dir.file("single.h5"), l);
                return dir.file("single.h5");
              }()));
    // Merge of two shards (even / odd listing positions) streams the same way.
    Listing shard[2];
    for (size_t i = 0; i < n; ++i) {
      shard[i % 2].images.push_back(l.images[i]);
      shard[i % 2].version.push_back(l.version[i]);
      shard[i % 2].batch = 50;
    }
    shard[1].skipped = {};
    run_to_end(dir.file("s0.h5"), shard[0]);
    run_to_end(dir.file("s1.h5"), shard[1]);
    size_t merge_peak = 0;
    merge_caches({dir.file("s1.h5"), dir.file("s0.h5")}, dir.file("m.h5"), &merge_peak);
    merge_peaks.push_back(merge_peak);
    EXPECT_EQ(read_bytes(dir.file("m.h5")), before);
  }
  // finalize: its output chunk + one staging chunk of the old consolidated file. merge: its
  // output chunk + one staging chunk per input (2 here).
  constexpr size_t kChunk = 64 * kF * sizeof(float);
  for (auto [peaks, bound] : {std::pair{&run1_peaks, kBound}, std::pair{&final_peaks, kBound},
                              std::pair{&merge_peaks, 3 * kChunk}}) {
    EXPECT_GT((*peaks)[0], 0u);
    EXPECT_LE((*peaks)[0], bound);
    EXPECT_EQ((*peaks)[0], (*peaks)[1]) << "the peak grows with N";
  }
  std::cout << "[memory] peak feature bytes: finalize " << final_peaks[1] << ", merge "
            << merge_peaks[1] << " (for N = 200 and 2000 alike)\n";
}

// ------------------------------------------------------------- bad files built with the C API
namespace {
// Writes a 4-image cache with the HDF5 C API directly (not the engine's writer), with one fault.
struct FileSpec {
  int64_t format_version = 1, feature_size_attr = 2048;
  hsize_t feature_cols = 2048;
  hid_t feature_type = H5T_IEEE_F32LE, label_type = H5T_STD_I32LE;
  bool nan = false, unsorted = false, bad_sha = false;
  int32_t label2 = 1;
  std::string omit;      // dataset not written
  std::string short_ds;  // dataset written with N - 1 entries
};
void build_file(const std::string& path, const FileSpec& s) {
  const hsize_t n = 4;
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  auto len = [&](const std::string& ds) { return ds == s.short_ds ? n - 1 : n; };
  auto strings = [&](const std::string& ds, std::vector<std::string> v, size_t fixed) {
    if (ds == s.omit) return;
    if (ds == s.short_ds) v.pop_back();
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, fixed ? fixed : H5T_VARIABLE);
    hsize_t dims[1] = {v.size()};
    hid_t sp = H5Screate_simple(1, dims, nullptr);
    hid_t d = H5Dcreate2(f, ds.c_str(), t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<const char*> ptrs;
    std::string buf;
    for (auto& x : v) ptrs.push_back(x.c_str()), buf += x;
    EXPECT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       fixed ? (const void*)buf.data() : ptrs.data()),
              0);
    H5Dclose(d), H5Sclose(sp), H5Tclose(t);
  };
  std::vector<std::string> paths{"a.jpg", "b.jpg", "c.jpg", "d.jpg"}, shas;
  if (s.unsorted) std::swap(paths[1], paths[2]);
  for (auto& p : paths) shas.push_back(content_sha(p, 0));
  if (s.bad_sha) shas[1][10] = 'G';
  strings("/paths", paths, 0);
  strings("/sha256", shas, 64);
  strings("/groups", {"x", "x", "y", ""}, 0);
  strings("/class_names", {"benign", "malignant"}, 0);
  H5Gclose(H5Gcreate2(f, "/skipped", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  strings("/skipped/paths", {"e.jpg"}, 0);
  strings("/skipped/reasons", {"bad"}, 0);
  if (s.omit != "/labels") {
    std::vector<int32_t> labels{0, 1, s.label2, -1};
    hsize_t dims[1] = {len("/labels")};
    hid_t sp = H5Screate_simple(1, dims, nullptr);
    hid_t d = H5Dcreate2(f, "/labels", s.label_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data()), 0);
    H5Dclose(d), H5Sclose(sp);
  }
  if (s.omit != "/features") {
    std::vector<float> feats(n * s.feature_cols);
    for (size_t i = 0; i < feats.size(); ++i) feats[i] = static_cast<float>(i % 97) * 0.25f;
    if (s.nan) feats[2 * s.feature_cols + 5] = std::nanf("");
    hsize_t dims[2] = {len("/features"), s.feature_cols};
    hid_t sp = H5Screate_simple(2, dims, nullptr);
    hid_t d = H5Dcreate2(f, "/features", s.feature_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, feats.data()), 0);
    H5Dclose(d), H5Sclose(sp);
  }
  auto int_attr = [&](const char* name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a), H5Sclose(sp);
  };
  auto str_attr = [&](const char* name, const std::string& v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    const char* p = v.c_str();
    H5Awrite(a, t, &p);
    H5Aclose(a), H5Sclose(sp), H5Tclose(t);
  };
  int_attr("format_version", s.format_version);
  int_attr("feature_size", s.feature_size_attr);
  int_attr("n_images", 4);
  str_attr("weights_sha256", settings_a().weights_sha256);
  str_attr("preprocessing", settings_a().preprocessing);
  str_attr("engine_version", "h5 C API");
  ASSERT_GE(H5Fclose(f), 0);
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
  s = {}, s.label_type = H5T_IEEE_F32LE;
  bad(s, {"/labels", "expected int32, found float32"});
  s = {}, s.feature_type = H5T_IEEE_F64LE;
  bad(s, {"/features", "expected float32, found float64"});
  s = {}, s.format_version = 2;
  bad(s, {"format_version", "expected 1, found 2"});
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

// ------------------------------------------------------------------------------- timings
TEST(CacheTiming, TenThousandImages) {
  TempDir dir;
  const size_t n = 10000;
  CacheContents c = make_contents(n);
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto t0 = clock::now();
  write_cache_atomic(dir.file("big.h5"), c);
  auto t1 = clock::now();
  CacheContents r = read_cache(dir.file("big.h5"));
  auto t2 = clock::now();
  EXPECT_TRUE(same_contents(c, r));
  // Journal: 20 pieces of 64 images, each written, fsync'ed and renamed before append returns.
  std::vector<double> lat;
  {
    BottleneckCache cache(dir.file("j.h5"), settings_a(), false);
    for (size_t p = 0; p < 20; ++p) {
      std::vector<CacheFeature> batch;
      for (size_t i = 0; i < 64; ++i) {
        size_t k = p * 64 + i;
        batch.push_back(
            {c.paths[k], c.sha256[k], {&c.features[k * kF], &c.features[(k + 1) * kF]}});
      }
      auto a = clock::now();
      cache.append(batch);
      lat.push_back(ms(clock::now() - a));
    }
    EXPECT_EQ(cache.cached(), 1280u);
  }
  auto t3 = clock::now();
  BottleneckCache replay(dir.file("j.h5"), settings_a(), false);
  auto t4 = clock::now();
  EXPECT_EQ(replay.cached(), 1280u);
  // finalize of n images, half of them rows of a consolidated file and half in journal pieces
  // (interleaved in path order: every output chunk mixes hyperslab reads and piece preads).
  CacheContents even;
  even.settings = c.settings, even.class_names = c.class_names;
  std::vector<ImageMeta> all;
  for (size_t i = 0; i < n; ++i) {
    all.push_back({c.paths[i], c.labels[i], c.groups[i]});
    if (i % 2 == 0) {
      even.paths.push_back(c.paths[i]), even.sha256.push_back(c.sha256[i]);
      even.labels.push_back(c.labels[i]), even.groups.push_back(c.groups[i]);
      even.features.insert(even.features.end(), &c.features[i * kF], &c.features[(i + 1) * kF]);
    }
  }
  write_cache_atomic(dir.file("f.h5"), even);
  even = {};
  double finalize_ms = 0;
  size_t finalize_peak = 0;
  {
    BottleneckCache cache(dir.file("f.h5"), settings_a(), false);
    std::vector<CacheFeature> batch;
    for (size_t i = 1; i < n; i += 2) {
      batch.push_back({c.paths[i], c.sha256[i], {&c.features[i * kF], &c.features[(i + 1) * kF]}});
      if (batch.size() == 256 || i + 2 >= n) cache.append(batch), batch.clear();
    }
    auto a = clock::now();
    cache.finalize(all, c.class_names, c.skipped);
    finalize_ms = ms(clock::now() - a);
    finalize_peak = cache.peak_feature_bytes();
  }
  EXPECT_TRUE(same_contents(read_cache(dir.file("f.h5")), c));
  std::sort(lat.begin(), lat.end());
  double mib = n * kF * 4 / 1048576.0;
  std::cout << "[timing] write_cache_atomic " << n << " x 2048: " << ms(t1 - t0) << " ms ("
            << mib / ms(t1 - t0) * 1000 << " MiB/s); read_cache: " << ms(t2 - t1) << " ms ("
            << mib / ms(t2 - t1) * 1000 << " MiB/s)\n"
            << "[timing] append of a 64-image piece (512 KiB + fsync + rename + dir fsync): median "
            << lat[lat.size() / 2] << " ms, max " << lat.back() << " ms; replay of 20 pieces "
            << ms(t4 - t3) << " ms\n"
            << "[timing] finalize " << n << " (half consolidated rows, half in journal pieces): "
            << finalize_ms << " ms, peak feature bytes " << finalize_peak << "\n";
}
