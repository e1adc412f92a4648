// tests/train_cache.h: the synthetic bottleneck cache of the train tool tests
// (tests/test_train.cpp, tests/test_train_cuda.cpp): two Gaussian classes in 2048-d with a known
// separation, written through the cache library, so the expected quality is known.
#pragma once
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/preprocessing.h"

namespace engine::test {

// n images, `mel` of them class 1; class 1's features are shifted by `shift` in 64 dimensions
// (post-ReLU-like: non-negative). Paths ISIC_%07d so the retrain split is deterministic.
inline void write_synthetic_cache(const std::string& path, int n, int mel, double shift,
                                  const std::string& weights_sha) {
  CacheContents c;
  c.settings = {weights_sha, Preprocessing::for_resize(ResizeFilter::Antialias, true).key(),
                "test"};
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
      c.features.push_back(
          std::max(0.f, 0.5f + 0.3f * g(rng) + (m && d < 64 ? static_cast<float>(shift) : 0.f)));
  }
  // Paths must be sorted for a valid cache.
  std::vector<size_t> idx(c.paths.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return c.paths[a] < c.paths[b]; });
  CacheContents s = c;
  for (size_t i = 0; i < idx.size(); ++i) {
    s.paths[i] = c.paths[idx[i]], s.labels[i] = c.labels[idx[i]];
    std::copy_n(c.features.begin() + static_cast<long>(idx[i] * kCacheFeatureSize),
                kCacheFeatureSize, s.features.begin() + static_cast<long>(i * kCacheFeatureSize));
  }
  write_cache_atomic(path, s);
}

}  // namespace engine::test
