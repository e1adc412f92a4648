// tests/test_extract_pipeline.cpp: models/extract_pipeline.h and the CPU side of
// models/bottleneck_backend.h, without a GPU. A fake backend computes each image's "bottleneck"
// from its input slot only when wait() is called (as a GPU's results are only there after the
// wait), so a pipeline that refilled a slot before delivering it, or read it before the wait,
// gives wrong features. Covered: every image delivered once with its own features, batches
// capped by the backend, the cache written durably and reused on a rerun, bad files skipped and
// --strict, an injected writer failure and an injected network failure (nothing already
// journaled is lost, the run stops with that error), the CPU backend bit-identical to
// InceptionV3Cpu, and the --device/--precision checks. The tools themselves: test_extract.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "models/bottleneck_backend.h"
#include "models/extract_pipeline.h"
#include "test_util.h"

using namespace engine;
using engine::test::error_of;
using engine::test::reference_file;
using engine::test::TempDir;

namespace {

constexpr size_t kImage = static_cast<size_t>(kInceptionInput) * kInceptionInput * 3;
const Preprocessing kPre = Preprocessing::for_resize(ResizeFilter::Antialias, false);

// The fake network: value j of an image's feature is a fixed function of its pixels.
void fake_feature(const float* x, float* out) {
  for (size_t j = 0; j < static_cast<size_t>(kBottleneckSize); ++j)
    out[j] = x[(j * 7919) % kImage] + 0.5f * x[(j * 104729 + 13) % kImage] + float(j);
}

class FakeBackend : public BottleneckBackend {
 public:
  explicit FakeBackend(int64_t max_batch) : max_(max_batch) {
    for (int s = 0; s < 2; ++s)
      in_[s].resize(max_ * kImage), out_[s].resize(max_ * kBottleneckSize);
  }
  int64_t max_batch() const override { return max_; }
  float* input(int s) override { return in_[s].data(); }
  const float* output(int s) const override { return out_[s].data(); }
  void launch(int s, int64_t n) override {
    ASSERT_FALSE(pending_[s]) << "slot " << s << " launched twice without a wait";
    pending_[s] = n;
    launches.push_back(n);
  }
  void wait(int s) override {
    ++waits;
    if (fail_wait_at == waits) fail("injected CUDA error: cudaErrorLaunchFailure at wait ", waits);
    for (int64_t i = 0; i < pending_[s]; ++i)
      fake_feature(in_[s].data() + i * kImage, out_[s].data() + i * kBottleneckSize);
    pending_[s] = 0;
  }
  std::string describe() const override { return "fake"; }
  std::vector<int64_t> launches;
  int waits = 0, fail_wait_at = 0;

 private:
  int64_t max_;
  std::vector<float> in_[2], out_[2];
  int64_t pending_[2] = {0, 0};
};

struct Images {
  std::vector<ExtractItem> items;
  std::vector<std::string> files;
};
Images list(const std::string& dir) {
  Images im;
  for (const DatasetImage& d : list_dataset(dir, {}).images)
    im.items.push_back({d.full_path, d.meta.path}), im.files.push_back(d.full_path);
  return im;
}

std::vector<float> expected_feature(const std::string& file) {
  std::vector<float> x(kImage), f(kBottleneckSize);
  preprocess_image(read_image_file_bytes(file), file, kPre, x.data());
  fake_feature(x.data(), f.data());
  return f;
}

ExtractOptions options(int batch, int workers = 3) {
  ExtractOptions o;
  o.pipeline.pre = kPre;
  o.pipeline.batch = batch;
  o.pipeline.workers = workers;
  o.pipeline.queue_batches = 1;
  return o;
}

CacheSettings settings() { return {std::string(64, 'a'), kPre.key(), "test", "fp32", ""}; }

// The cache at `path` (opened as tools/extract opens it) and a fresh FakeBackend(max_batch):
// what each extract_features run below writes into and computes with.
struct Target {
  Target(const std::string& path, int64_t max_batch)
      : cache(path, settings(), false), net(max_batch) {}
  ExtractResult extract(const Images& im, const ExtractOptions& o) {
    return extract_features(im.items, net, CacheSink::of(cache), o, nullptr);
  }
  BottleneckCache cache;
  FakeBackend net;
};

}  // namespace

TEST(Pipeline, DeliversEveryImageOnceWithItsOwnFeatures) {
  const Images im = list(reference_file("dataset/classes"));
  ASSERT_EQ(im.files.size(), 16u);
  FakeBackend net(8);
  std::map<size_t, std::vector<float>> got;
  std::vector<size_t> sizes;
  PipelineHooks h;
  h.batch = [&](const std::vector<size_t>& idx, const std::vector<std::string>& sha,
                const float* b) {
    sizes.push_back(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) {
      EXPECT_EQ(sha[k].size(), 64u);
      EXPECT_TRUE(got.emplace(idx[k], std::vector<float>(b + k * kBottleneckSize,
                                                         b + (k + 1) * kBottleneckSize))
                      .second)
          << "image " << idx[k] << " delivered twice";
    }
  };
  const PipelineStats s = run_pipeline(im.files, net, options(3).pipeline, h);
  EXPECT_EQ(s.images, 16u);
  EXPECT_EQ(s.batches, 6u);  // 5 x 3 + 1
  EXPECT_EQ(sizes, (std::vector<size_t>{3, 3, 3, 3, 3, 1}));
  EXPECT_EQ(net.launches, (std::vector<int64_t>{3, 3, 3, 3, 3, 1}));
  ASSERT_EQ(got.size(), 16u);
  for (const auto& [i, f] : got)
    EXPECT_EQ(f, expected_feature(im.files[i])) << im.files[i] << ": another image's feature";
}

TEST(Pipeline, BatchIsCappedByTheBackend) {
  const Images im = list(reference_file("dataset/classes"));
  FakeBackend net(4);
  PipelineHooks h;
  size_t n = 0;
  h.batch = [&](const std::vector<size_t>& idx, const std::vector<std::string>&, const float*) {
    EXPECT_LE(idx.size(), 4u);
    n += idx.size();
  };
  EXPECT_EQ(run_pipeline(im.files, net, options(32, 1).pipeline, h).batches, 4u);
  EXPECT_EQ(n, 16u);
}

TEST(ExtractPipeline, WritesTheCacheAndReusesItOnARerun) {
  TempDir tmp;
  const Images im = list(reference_file("dataset/classes"));
  const std::string p = tmp / "c.h5";
  {
    Target t(p, 4);
    const ExtractResult r = t.extract(im, options(4));
    EXPECT_EQ(r.extracted, 16u);
    EXPECT_EQ(r.reused, 0u);
    EXPECT_EQ(std::count(r.ok.begin(), r.ok.end(), 1), 16);
    EXPECT_EQ(t.cache.journal_pieces(), 4u);
    std::vector<ImageMeta> cur;
    for (const auto& it : im.items) cur.push_back({it.key, 0, ""});
    t.cache.finalize(cur, {"x"}, {});
  }
  const CacheContents c = read_cache(p);
  ASSERT_EQ(c.size(), 16u);
  for (size_t i = 0; i < c.size(); ++i) {
    const auto want = expected_feature(reference_file("dataset/classes/" + c.paths[i]));
    EXPECT_EQ(0, std::memcmp(c.features.data() + i * kBottleneckSize, want.data(),
                             want.size() * sizeof(float)))
        << c.paths[i];
  }
  Target t(p, 4);
  const ExtractResult r = t.extract(im, options(4));
  EXPECT_EQ(r.extracted, 0u);
  EXPECT_EQ(r.reused, 16u);
  EXPECT_TRUE(t.net.launches.empty());
}

TEST(ExtractPipeline, BadFilesAreSkippedAndStrictStopsKeepingEarlierBatches) {
  TempDir tmp;
  const Images im = list(reference_file("dataset/bad"));
  size_t good = 0;
  {
    Target t(tmp / "c.h5", 2);
    std::vector<std::string> lines;
    ExtractOptions o = options(2);
    o.on_skip = [&](const std::string& reason) { lines.push_back(reason); };
    const ExtractResult r = t.extract(im, o);
    EXPECT_GE(r.skipped.size(),
              4u);  // empty, truncated, text, webp, tiff (the listing drops links)
    EXPECT_EQ(lines.size(), r.skipped.size());
    for (const auto& s : r.skipped) EXPECT_EQ(s.reason.find('\n'), std::string::npos) << s.reason;
    good = r.extracted;
    EXPECT_EQ(good + r.skipped.size(), im.items.size());
  }
  // --strict, one worker (files in list order): the run stops at the first bad file with an
  // Error; whatever was delivered before it is durable.
  Target t(tmp / "s.h5", 1);
  ExtractOptions o = options(1, 1);
  o.strict = true;
  const std::string e = error_of([&] { t.extract(im, o); });
  EXPECT_NE(e.find("--strict"), std::string::npos) << e;
  EXPECT_EQ(t.cache.cached(), static_cast<size_t>(t.net.waits));
  EXPECT_LT(t.cache.cached(), good);
}

// The writer thread's append fails on the third batch: extract_features ends with that error,
// the two pieces written before stay (a rerun reuses them), nothing hangs.
TEST(ExtractPipeline, WriterFailureStopsTheRunAndKeepsEarlierPieces) {
  TempDir tmp;
  const Images im = list(reference_file("dataset/classes"));
  const std::string p = tmp / "c.h5";
  {
    Target t(p, 3);
    CacheSink sink = CacheSink::of(t.cache);
    int calls = 0;
    sink.append = [&](const std::vector<CacheFeature>& b) {
      if (++calls == 3) fail("injected: ", p, ": write failed: No space left on device");
      t.cache.append(b);
    };
    const std::string e =
        error_of([&] { extract_features(im.items, t.net, sink, options(3), nullptr); });
    EXPECT_NE(e.find("No space left on device"), std::string::npos) << e;
    EXPECT_EQ(calls, 3) << "no batch may be written after the failed one";
    EXPECT_EQ(t.cache.journal_pieces(), 2u);
  }
  Target t(p, 3);
  EXPECT_EQ(t.cache.cached(), 6u);
  const ExtractResult r = t.extract(im, options(3));
  EXPECT_EQ(r.reused, 6u);
  EXPECT_EQ(r.extracted, 10u);
}

// A network error at the third wait (a CUDA error mid-run): the run ends with that error after
// the writer has made every batch delivered before it durable.
TEST(ExtractPipeline, NetworkErrorMidRunLosesNothingAlreadyDelivered) {
  TempDir tmp;
  const Images im = list(reference_file("dataset/classes"));
  const std::string p = tmp / "c.h5";
  {
    Target t(p, 2);
    t.net.fail_wait_at = 3;
    CacheSink sink = CacheSink::of(t.cache);
    size_t appended = 0;
    sink.append = [&](const std::vector<CacheFeature>& b) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a slow disk
      t.cache.append(b);
      appended += b.size();
    };
    const std::string e =
        error_of([&] { extract_features(im.items, t.net, sink, options(2), nullptr); });
    EXPECT_NE(e.find("injected CUDA error"), std::string::npos) << e;
    EXPECT_EQ(appended, 4u) << "the two batches delivered before the error must be durable";
  }
  BottleneckCache cache(p, settings(), false);
  EXPECT_EQ(cache.cached(), 4u);
  EXPECT_EQ(cache.journal_pieces(), 2u);
}

// The CPU backend (batch-invariant, as tools/extract runs it) gives InceptionV3Cpu's bits.
TEST(ExtractPipeline, CpuBackendEqualsInceptionV3Cpu) {
  const Images im = list(reference_file("dataset/classes"));
  const std::vector<std::string> files(im.files.begin(), im.files.begin() + 3);
  const InceptionWeights w = load_inception_v3_weights(reference_file("inception_v3_1based.h5"));
  BottleneckBackendCpu net(w, 2, true);
  std::map<size_t, std::vector<float>> got;
  PipelineHooks h;
  h.batch = [&](const std::vector<size_t>& idx, const std::vector<std::string>&, const float* b) {
    for (size_t k = 0; k < idx.size(); ++k)
      got[idx[k]].assign(b + k * kBottleneckSize, b + (k + 1) * kBottleneckSize);
  };
  PipelineOptions o = options(2).pipeline;
  run_pipeline(files, net, o, h);
  ASSERT_EQ(got.size(), 3u);
  InceptionV3Cpu model(w);
  model.set_batch_invariant(true);
  Tensor x(Shape{3, kInceptionInput, kInceptionInput, 3}), b(Shape{3, kBottleneckSize});
  for (size_t i = 0; i < 3; ++i)
    preprocess_image(read_image_file_bytes(files[i]), files[i], kPre, x.data() + i * kImage);
  model.forward(x, b);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(0, std::memcmp(got[i].data(), b.data() + i * kBottleneckSize,
                             kBottleneckSize * sizeof(float)))
        << files[i];
}

TEST(Backend, EachPrecisionNeedsItsDevice) {
  BackendRequest r;
  r.device = "cpu";
  r.precision = "fp16";
  EXPECT_THROW(check_backend_request(r), BackendUsageError);
  r.precision = "fp32";
  EXPECT_EQ(check_backend_request(r), Device::CPU);
  r.precision = "bf16";  // the CPU's reduced precisions (the instructions are checked later)
  EXPECT_EQ(check_backend_request(r), Device::CPU);
  r.device = "auto", r.precision = "int8";
  EXPECT_EQ(check_backend_request(r), Device::CPU);
  r.device = "cuda";
  EXPECT_THROW(check_backend_request(r), BackendUsageError);
  r.precision = "fp8";
  EXPECT_THROW(check_backend_request(r), BackendUsageError);
  r.device = "cpu";
  if (cuda_availability().devices == 0) {
    r.device = "auto", r.precision = "tf32";
    const std::string e = error_of([&] { check_backend_request(r); });
    EXPECT_NE(e.find("--device auto found none"), std::string::npos) << e;
    r.device = "cuda", r.precision = "fp32";
    try {
      check_backend_request(r);
      ADD_FAILURE() << "--device cuda without a GPU accepted";
    } catch (const BackendUsageError&) {
      ADD_FAILURE() << "a missing GPU is not a usage error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
    }
  }
}
