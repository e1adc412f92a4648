// tests/test_cache_merge.cpp: finalize (drops deleted images, takes new labels) and merge_caches
// (engine/cache_merge.cpp: equals a single run, rejects conflicts), and the memory bound both keep:
// the same few 64-row chunks of feature data for N = 200 and 2000 (weights/CACHE.md, "Memory").
// Run: ./test_cache_merge (writes only under the system temporary directory).
#include <gtest/gtest.h>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

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
