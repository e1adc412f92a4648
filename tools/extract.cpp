// tools/extract.cpp: a folder of images -> a crash-safe, resumable HDF5 cache of Inception v3
// bottlenecks (engine/bottleneck_cache.h; layout in weights/CACHE.md).
//
//   extract --images DIR [--labels CSV] --weights inception.h5 --out cache.h5
//           [--device auto|cpu|cuda] [--precision auto|fp32|bf16|int8|tf32|fp16] [--batch 32]
//           [--workers N]
//           [--shard K/N] [--strict] ...
//   extract --merge OUT.h5 SHARD1.h5 SHARD2.h5 ...
//
// The pipeline (decode workers, bounded queue, double-buffered batches on the CPU or GPU
// backend, the journal writer thread) is models/extract_pipeline.h; this file parses flags, lists
// the images, opens the cache and the backend, and prints. --precision is part of the cache's
// settings (weights/CACHE.md): fp32 from the CPU and the GPU are the same setting; a cache of
// another precision is refused (and the reverse) unless --force. auto (the default) keeps an
// existing cache's precision, else takes bf16 on a CPU that has it natively, else fp32 (the GPU:
// fp32). bf16/int8 on a CPU without the instructions: one warning line, then fp32 (recorded so).
// int8 calibrates its activation ranges on up to 32 images of the listing (all shards pick the
// same ones) and stores them with the cache; a resumed run reuses them, so it is bit-identical to
// an unbroken one. Bad files are skipped with one line each and listed at the end and in the
// cache. Exit status: 0 all images extracted; 3 some were skipped; 1 fatal error (or the first
// bad image with --strict); 2 bad flags (--precision tf32/fp16 on the CPU, bf16/int8 with
// --device cuda included).
#include <sys/stat.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>

#include "engine/bottleneck_cache.h"
#include "engine/cli_status.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "engine/progress.h"
#include "models/bottleneck_backend.h"
#include "models/extract_pipeline.h"

using namespace engine;

namespace {

constexpr int kExitSkipped = 3;
constexpr const char* kEngineVersion = "0.1.0";

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
  std::string precision = "auto";
  std::string resize = "antialias", shard;
  int batch = 32, workers = 0, queue_batches = 4;
  bool dct_scale = false, force = false, strict = false, quiet = false;
  int64_t max_pixels = DecodeOptions{}.max_pixels;
};

int run_extract(const Options& o) {
  BackendRequest request;
  request.device = o.device;
  request.precision = o.precision;
  request.batch = o.batch;
  request.batch_invariant = true;  // CPU: a resumed run gives bit-identical features
  const Device device = check_backend_request(request);  // fp16 on the CPU: exit 2, no work
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
  // The existing cache (unless --force discards it) decides `auto` and keeps its int8
  // calibration: a resume never changes how features are made without saying so.
  const std::optional<CacheSettings> stored = o.force ? std::nullopt : peek_cache_settings(o.out);
  std::string precision = o.precision;
  if (precision == "auto" && stored) {
    precision = stored->precision;
    if (device == Device::CPU ? is_gpu_only_precision(precision) : is_cpu_only_precision(precision))
      fail(o.out, ": the cache holds ", precision, " features, which the ",
           device == Device::CPU ? "CPU" : "GPU", " does not compute; use --device ",
           device == Device::CPU ? "cuda" : "cpu", ", or --force to extract again");
  }
  precision = resolve_precision(precision, device, [](const std::string& s) {
    std::fprintf(stderr, "warning: %s\n", s.c_str());
  });
  request.precision = settings.precision = precision;

  // Loaded after the cache has accepted the settings (a refusal is the only line), except for a
  // fresh int8 calibration, which needs the network first.
  std::optional<InceptionWeights> weights;
  auto load_weights = [&]() -> const InceptionWeights& {
    if (!weights) {
      weights = load_inception_v3_weights(o.weights);
      if (!random_weights_warning(*weights).empty())
        std::fprintf(stderr, "%s\n", random_weights_warning(*weights).c_str());
    }
    return *weights;
  };
  if (precision == "int8") {
    if (stored && stored->precision != "int8")
      fail(o.out, ": cache was made with precision ", stored->precision,
           "; this run uses int8; use --force to discard it and extract again");
    if (stored) {
      settings.calibration = stored->calibration;
    } else {
      // Over the whole listing, not this shard: every shard stores the same calibration.
      std::vector<std::string> files;
      for (const auto& im : ds.images) files.push_back(im.full_path);
      PipelineOptions po;
      po.pre = pre;
      po.max_pixels = o.max_pixels;
      const CalibrationSample cs = calibrate_on_files(load_weights(), files, po);
      settings.calibration = cs.calibration.serialize();
      std::printf("int8: calibrated on %lld images in %.1f s\n",
                  static_cast<long long>(cs.calibration.images), cs.seconds);
      std::fflush(stdout);
    }
    // The network takes the stored text, parsed, in both cases: fresh and resumed runs quantize
    // alike (%.9g round-trips every float).
    request.calibration = Int8Calibration::parse(settings.calibration, o.out);
  }
  BottleneckCache cache(o.out, settings, o.force);
  const InceptionWeights& w = load_weights();

  // No larger than the work: the GPU prepares (and checks the memory of) its largest batch first.
  request.batch = std::max<int64_t>(1, std::min<int64_t>(o.batch, int64_t(jobs.size())));
  std::unique_ptr<BottleneckBackend> net = open_bottleneck_backend(
      w, request, [](const std::string& s) { std::fprintf(stderr, "note: %s\n", s.c_str()); });
  if (!o.quiet) std::fprintf(stderr, "network: %s\n", net->describe().c_str());

  std::vector<ExtractItem> items;
  for (const auto& im : jobs) items.push_back({im.full_path, im.meta.path});
  ExtractOptions eo;
  eo.pipeline.pre = pre;
  eo.pipeline.max_pixels = o.max_pixels;
  eo.pipeline.batch = o.batch;
  eo.pipeline.workers = o.workers;
  eo.pipeline.queue_batches = o.queue_batches;
  eo.strict = o.strict;
  eo.on_skip = [](const std::string& reason) {
    std::fprintf(stderr, "%sskip: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "", reason.c_str());
  };
  Progress progress("extract", static_cast<int64_t>(jobs.size()));
  progress.set_quiet(o.quiet);
  ExtractResult r = extract_features(items, *net, CacheSink::of(cache), eo, &progress);
  progress.finish();

  std::vector<SkippedFile> skipped = ds.skipped;
  skipped.insert(skipped.end(), r.skipped.begin(), r.skipped.end());
  std::vector<ImageMeta> current;
  for (size_t i = 0; i < jobs.size(); ++i)
    if (r.ok[i]) current.push_back(jobs[i].meta);
  std::sort(skipped.begin(), skipped.end(),
            [](const SkippedFile& a, const SkippedFile& b) { return a.path < b.path; });
  cache.finalize(current, ds.class_names, skipped);
  std::printf("cache: %s: %zu images (%zu extracted now, %zu reused), %zu skipped\n", o.out.c_str(),
              current.size(), r.extracted, r.reused, skipped.size());
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
  app.add_option("--device", o.device, "cpu, cuda or auto (auto: the GPU when one is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--precision", o.precision,
                 "auto (default: an existing cache's precision, else bf16 on a CPU with "
                 "AVX512_BF16/AMX, else fp32; fp32 on the GPU), fp32 (exact, the same setting on "
                 "the CPU and the GPU), bf16 or int8 (CPU), tf32 or fp16 (GPU); part of the "
                 "cache's settings")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "int8", "tf32", "fp16"}));
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
  } catch (const BackendUsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 1;
  }
}
