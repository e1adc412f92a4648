// tests/test_cache_timing.cpp: 10,000-image timings of the bottleneck cache (write and read of the
// consolidated file, journal appends, replay, finalize), checked bitwise; prints the numbers
// weights/CACHE.md quotes ("Timings").
// Run: ./test_cache_timing (writes only under the system temporary directory).
#include <gtest/gtest.h>
#include <chrono>
#include <iostream>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

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
            << "[timing] finalize " << n
            << " (half consolidated rows, half in journal pieces): " << finalize_ms
            << " ms, peak feature bytes " << finalize_peak << "\n";
}
