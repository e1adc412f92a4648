// tests/cache_test_util.h: what the bottleneck-cache tests share (tests/test_cache_*.cpp):
// settings, deterministic stand-ins for extraction (content hashes and features from path +
// version), a listing of images in directory order, a run to the end, bitwise comparison of two
// caches, a forked child that the crash tests SIGKILL at a named point, and one-line error checks.
#pragma once
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/error.h"
#include "engine/preprocessing.h"
#include "test_util.h"

namespace engine::test {

constexpr size_t kF = static_cast<size_t>(kCacheFeatureSize);

inline bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
inline std::string read_bytes(const std::string& p) { return slurp(p); }
inline void write_bytes(const std::string& p, const std::string& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
}
inline std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

#define EXPECT_ONE_LINE_ERROR(msg, ...)                                                   \
  do {                                                                                    \
    std::string m_ = (msg);                                                               \
    EXPECT_FALSE(m_.empty()) << "no error thrown";                                        \
    EXPECT_EQ(m_.find('\n'), std::string::npos) << m_;                                    \
    for (const std::string& part_ : std::vector<std::string>{__VA_ARGS__})                \
      EXPECT_NE(m_.find(part_), std::string::npos) << "'" << part_ << "' not in: " << m_; \
  } while (0)

inline CacheSettings settings_a() {
  return {sha256_hex(reinterpret_cast<const uint8_t*>("weights A"), 9),
          Preprocessing::for_resize(ResizeFilter::Antialias, true).key(), "test 1.0"};
}
inline CacheSettings settings_b() {
  CacheSettings s = settings_a();
  s.weights_sha256 = sha256_hex(reinterpret_cast<const uint8_t*>("weights B"), 9);
  return s;
}

// Deterministic stand-ins for extraction: the "image bytes" are path + version.
inline std::string content_sha(const std::string& path, int version) {
  std::string bytes = path + "#" + std::to_string(version);
  return sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}
inline std::vector<float> feature_for(const std::string& path, int version) {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(path)) + 977u * version);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> f(kF);
  for (float& v : f) v = dist(rng);
  // Bit patterns a lossy path would change: signed zero, a subnormal, the largest float.
  f[0] = -0.0f, f[1] = 1e-40f, f[2] = std::numeric_limits<float>::max();
  return f;
}
inline CacheFeature make_feature(const std::string& path, int version = 0) {
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
inline Listing make_listing(size_t n = 35) {
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
inline void extract(BottleneckCache& cache, const Listing& l, size_t max_batches = SIZE_MAX) {
  for (size_t b = 0; b < std::min(max_batches, l.batches()); ++b) {
    std::vector<CacheFeature> pending;
    for (size_t i = b * l.batch; i < std::min(l.images.size(), (b + 1) * l.batch); ++i)
      if (!cache.has(l.images[i].path, content_sha(l.images[i].path, l.version[i])))
        pending.push_back(make_feature(l.images[i].path, l.version[i]));
    cache.append(pending);
  }
}
inline CacheContents run_to_end(const std::string& path, const Listing& l,
                                const CacheSettings& s = settings_a(), bool force = false) {
  BottleneckCache cache(path, s, force);
  extract(cache, l);
  cache.finalize(l.images, l.class_names, l.skipped);
  return read_cache(path);
}

inline ::testing::AssertionResult same_contents(const CacheContents& a, const CacheContents& b) {
  auto fail = [](const char* what) { return ::testing::AssertionFailure() << what << " differ"; };
  if (a.settings.weights_sha256 != b.settings.weights_sha256 ||
      a.settings.preprocessing != b.settings.preprocessing ||
      a.settings.engine_version != b.settings.engine_version ||
      a.settings.precision != b.settings.precision ||
      a.settings.calibration != b.settings.calibration)
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
inline int run_child(const std::function<void()>& body) {
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
inline void arm(const char* point) { setenv("ENGINE_CACHE_CRASH_AT", point, 1); }
inline bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

// A consolidated cache of n images (zero-padded names: already sorted), two skipped files.
inline CacheContents make_contents(size_t n) {
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

}  // namespace engine::test
