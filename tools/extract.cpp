// tools/extract.cpp: a folder of images -> a crash-safe, resumable HDF5 cache of Inception v3
// bottlenecks (engine/bottleneck_cache.h; layout in weights/CACHE.md).
//
//   extract --images DIR [--labels CSV] --weights inception.h5 --out cache.h5
//           [--device auto|cpu|cuda] [--batch 32] [--workers N] [--shard K/N] [--strict] ...
//   extract --merge OUT.h5 SHARD1.h5 SHARD2.h5 ...
//
// Pipeline: N decode workers (hash the bytes; skip images already cached with the same hash;
// decode, resize, scale) feed a bounded queue; the main thread batches, runs the network and makes
// each batch durable in the cache's journal before taking the next. Memory is bounded by
// --batch and --queue, never by the dataset. Bad files are skipped with one line each and listed
// at the end and in the cache. Exit status: 0 all images extracted; 3 some were skipped;
// 1 fatal error (or the first bad image with --strict); 2 bad flags.
#include <sys/stat.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "engine/bottleneck_cache.h"
#include "engine/cli_status.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "engine/progress.h"
#include "models/inception_v3.h"

using namespace engine;

namespace {

constexpr int kExitSkipped = 3;
constexpr const char* kEngineVersion = "0.1.0";

struct Item {
  size_t index = 0;  // into the job list
  std::string sha256;
  bool cached = false;
  std::string error;          // non-empty: skipped
  std::vector<float> pixels;  // Preprocessing::floats(): 299*299*3 in [-1, 1]
};

// A bounded multi-producer, single-consumer queue: producers block when it is full.
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t cap) : cap_(cap) {}
  bool push(Item&& it) {
    std::unique_lock<std::mutex> l(mu_);
    not_full_.wait(l, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(it));
    not_empty_.notify_one();
    return true;
  }
  std::optional<Item> pop() {
    std::unique_lock<std::mutex> l(mu_);
    not_empty_.wait(l, [&] { return !q_.empty() || producers_ == 0 || closed_; });
    if (q_.empty()) return std::nullopt;
    Item it = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return it;
  }
  void producer_done() {
    std::lock_guard<std::mutex> l(mu_);
    --producers_;
    not_empty_.notify_all();
  }
  void set_producers(int n) { producers_ = n; }
  void close() {  // stop everything (strict mode / fatal error)
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  size_t cap_;
  std::deque<Item> q_;
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  int producers_ = 0;
  bool closed_ = false;
};

// --shard K/N, 1 <= K <= N: the whole text must be two decimal integers around one '/'.
bool parse_shard(const std::string& s, int* k, int* n) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos) return false;
  auto number = [](const std::string& t, int* v) {
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
      return false;
    *v = std::stoi(t);
    return true;
  };
  return number(s.substr(0, slash), k) && number(s.substr(slash + 1), n) && *n >= 1 && *k >= 1 &&
         *k <= *n;
}

struct Options {
  std::string images, labels, label_column, group_column, out, weights, device = "auto";
  std::string resize = "antialias", shard;
  int batch = 32, workers = 0, queue_batches = 4;
  bool dct_scale = false, force = false, strict = false, quiet = false;
  int64_t max_pixels = DecodeOptions{}.max_pixels;
};

int run_extract(const Options& o) {
  const Device device = resolve_device(o.device);
  if (device == Device::CUDA && o.device == "cuda")
    fail(
        "--device cuda: extract does not run Inception on the GPU yet (models/inception_v3_cuda is "
        "built but not wired into the tools); use --device cpu or auto");
  if (device == Device::CUDA)
    std::fprintf(stderr, "note: a GPU is present but extract does not use it yet: using the CPU\n");
  int shard_k = 1, shard_n = 1;
  if (!o.shard.empty()) parse_shard(o.shard, &shard_k, &shard_n);  // validated in main
  // tf1: TF's JPEG decode, no EXIF rotation, no DCT scaling (whatever --dct-scale says).
  const Preprocessing pre = Preprocessing::for_resize(parse_resize_filter(o.resize), o.dct_scale);

  DatasetOptions dsopt{o.labels, o.label_column, o.group_column, false};
  Dataset ds = list_dataset(o.images, dsopt);
  std::vector<DatasetImage> jobs;
  for (auto& im : ds.images)
    if (in_shard(im.meta.path, shard_k, shard_n)) jobs.push_back(im);
  for (const auto& n : ds.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  std::printf(
      "images: %zu in %s (%s, %zu classes)%s\n", jobs.size(), o.images.c_str(),
      ds.label_source.c_str(), ds.class_names.size(),
      shard_n > 1 ? (" shard " + o.shard + " of " + std::to_string(ds.images.size())).c_str() : "");
  {
    std::set<std::string> groups;
    for (const auto& im : jobs)
      if (!im.meta.group.empty()) groups.insert(im.meta.group);
    std::printf("groups for the split: %s%s\n", ds.group_source.c_str(),
                groups.empty() ? "" : (", " + std::to_string(groups.size()) + " distinct").c_str());
  }
  std::fflush(stdout);

  CacheSettings settings;
  settings.weights_sha256 = sha256_file(o.weights);
  settings.preprocessing = pre.key();
  settings.engine_version = kEngineVersion;
  BottleneckCache cache(o.out, settings, o.force);

  InceptionWeights w = load_inception_v3_weights(o.weights);
  if (!random_weights_warning(w).empty())
    std::fprintf(stderr, "%s\n", random_weights_warning(w).c_str());
  InceptionV3Cpu model(w);
  model.set_batch_invariant(true);  // a resumed run gives bit-identical features

  const int workers = o.workers > 0 ? o.workers : std::max(1u, std::thread::hardware_concurrency());
  BoundedQueue queue(static_cast<size_t>(o.batch) * static_cast<size_t>(o.queue_batches));
  queue.set_producers(workers);
  std::atomic<size_t> next{0};
  std::mutex cache_mu;  // has() from the workers vs append() from this thread
  std::vector<std::thread> pool;
  for (int t = 0; t < workers; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < jobs.size(); i = next++) {
        Item it;
        it.index = i;
        try {
          std::vector<uint8_t> bytes = read_image_file_bytes(jobs[i].full_path);
          it.sha256 = sha256_hex(bytes.data(), bytes.size());
          bool cached;
          {
            std::lock_guard<std::mutex> g(cache_mu);
            cached = cache.has(jobs[i].meta.path, it.sha256);
          }
          if (cached) {
            it.cached = true;
          } else {
            it.pixels.resize(static_cast<size_t>(pre.floats()));
            preprocess_image(bytes, jobs[i].full_path, pre, it.pixels.data(), o.max_pixels);
          }
        } catch (const std::exception& e) {
          it.error = e.what();
        }
        if (!queue.push(std::move(it))) break;
      }
      queue.producer_done();
    });
  }
  struct JoinAll {  // workers are joined on every exit path
    std::vector<std::thread>& p;
    BoundedQueue& q;
    ~JoinAll() {
      q.close();
      for (auto& t : p)
        if (t.joinable()) t.join();
    }
  } join_all{pool, queue};

  Progress progress("extract", static_cast<int64_t>(jobs.size()));
  progress.set_quiet(o.quiet);
  std::vector<SkippedFile> skipped = ds.skipped;
  std::vector<bool> ok(jobs.size(), false);
  size_t extracted = 0, reused = 0, bad = 0;
  std::vector<Item> pending;
  auto run_batch = [&] {
    if (pending.empty()) return;
    const int64_t n = static_cast<int64_t>(pending.size());
    const int64_t image = kInceptionInput * kInceptionInput * 3;
    Tensor x(Shape{n, kInceptionInput, kInceptionInput, 3});
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(x.data() + i * image, pending[static_cast<size_t>(i)].pixels.data(),
                  image * sizeof(float));
    Tensor b(Shape{n, kBottleneckSize});
    model.forward(x, b);
    std::vector<CacheFeature> batch;
    for (int64_t i = 0; i < n; ++i) {
      Item& it = pending[static_cast<size_t>(i)];
      batch.push_back({jobs[it.index].meta.path, it.sha256,
                       std::vector<float>(b.data() + i * kBottleneckSize,
                                          b.data() + (i + 1) * kBottleneckSize)});
      ok[it.index] = true;
    }
    {
      std::lock_guard<std::mutex> g(cache_mu);
      cache.append(batch);  // durable before we go on
    }
    extracted += pending.size();
    progress.advance(n);
    pending.clear();
  };
  while (auto item = queue.pop()) {
    if (!item->error.empty()) {
      ++bad;
      skipped.push_back({jobs[item->index].meta.path, item->error});
      std::fprintf(stderr, "%sskip: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "",
                   item->error.c_str());
      if (o.strict)
        fail("--strict: stopping at the first bad image (", bad,
             " skipped); work so far is kept in the cache journal");
      progress.set_note(std::to_string(bad) + " skipped");
      progress.advance(1);
    } else if (item->cached) {
      ok[item->index] = true;
      ++reused;
      progress.advance(1);
    } else {
      pending.push_back(std::move(*item));
      if (static_cast<int>(pending.size()) == o.batch) run_batch();
    }
  }
  run_batch();
  progress.finish();

  std::vector<ImageMeta> current;
  for (size_t i = 0; i < jobs.size(); ++i)
    if (ok[i]) current.push_back(jobs[i].meta);
  std::sort(skipped.begin(), skipped.end(),
            [](const SkippedFile& a, const SkippedFile& b) { return a.path < b.path; });
  cache.finalize(current, ds.class_names, skipped);
  std::printf("cache: %s: %zu images (%zu extracted now, %zu reused), %zu skipped\n", o.out.c_str(),
              current.size(), extracted, reused, skipped.size());
  if (!skipped.empty()) {
    std::printf("skipped files:\n");
    for (const auto& s : skipped) std::printf("  %s: %s\n", s.path.c_str(), s.reason.c_str());
  }
  return skipped.empty() ? 0 : kExitSkipped;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Extract Inception v3 bottlenecks of a folder of images into a resumable HDF5 cache"};
  Options o;
  std::vector<std::string> merge;
  app.add_option("--images", o.images, "image folder: class sub-folders, or flat with --labels");
  app.add_option("--labels", o.labels, "ISIC-style labels CSV")->check(CLI::ExistingFile);
  app.add_option("--label-column", o.label_column, "label column of the CSV (default: auto)");
  app.add_option("--group-column", o.group_column,
                 "lesion/patient column of the CSV (default: lesion_id or patient_id if present)");
  app.add_option("--weights", o.weights, "Keras InceptionV3 HDF5 weights");
  app.add_option("--out", o.out, "cache file to create or update");
  app.add_option("--device", o.device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--batch", o.batch, "images per network batch")->check(CLI::Range(1, 4096));
  app.add_option("--workers", o.workers, "decode threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--queue", o.queue_batches, "decoded batches queued ahead of the network")
      ->check(CLI::Range(1, 64));
  app.add_option("--resize", o.resize,
                 "antialias (default; PIL/torch antialiased bilinear), bilinear (TF2 "
                 "tf.image.resize), or tf1 (retrain.py exactly: tf.io.decode_jpeg's INTEGER_FAST "
                 "decode, no EXIF rotation, TF1 resize_bilinear; then x/127.5-1)")
      ->check(CLI::IsMember({"antialias", "bilinear", "tf1"}));
  app.add_option(
      "--dct-scale", o.dct_scale,
      "decode large JPEGs at 1/2 or 1/4 scale when still >= 299 (default false: it moved the "
      "bottleneck by 2% on 1024x1024 images for no measurable speed on the CPU, bench/README.md)");
  app.add_option("--max-pixels", o.max_pixels, "largest accepted width*height")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--shard", o.shard, "process the K-th of N deterministic parts, e.g. 2/4");
  app.add_flag("--force", o.force, "rebuild a cache made with other weights or settings");
  app.add_flag("--strict", o.strict, "stop at the first bad image");
  app.add_flag("--quiet", o.quiet, "no progress output");
  app.add_option("--merge", merge, "OUT IN1 IN2 ...: join shard caches into OUT")->expected(3, -1);
  try {
    app.parse(argc, argv);
    if (merge.empty() && (o.images.empty() || o.weights.empty() || o.out.empty()))
      throw CLI::RequiredError("--images, --weights and --out (or --merge)");
    int k, n;
    if (!o.shard.empty() && !parse_shard(o.shard, &k, &n))
      throw CLI::ValidationError("--shard",
                                 "expected K/N with 1 <= K <= N (e.g. 2/4), got '" + o.shard + "'");
  } catch (const CLI::ParseError& e) {
    return cli_parse_error_status(app, e);  // --help: 0; a bad flag: one line, 2
  }
  try {
    if (!merge.empty()) {
      merge_caches(std::vector<std::string>(merge.begin() + 1, merge.end()), merge[0]);
      std::printf("merged %zu caches into %s\n", merge.size() - 1, merge[0].c_str());
      return 0;
    }
    return run_extract(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 1;
  }
}
