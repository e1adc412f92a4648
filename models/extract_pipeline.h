// models/extract_pipeline.h: image files -> Inception v3 bottlenecks, keeping the network busy.
// tools/extract (into the bottleneck cache) and tools/predict (into the head) run it; the tools
// only parse flags, call it and print.
//
//   decode workers (N threads)      main thread (the caller's)           writer thread (extract)
//   read bytes, SHA-256,      --->  gather images into backend slot A    cache.append(batch):
//   cached? else decode,   bounded  while the network runs slot B;       one durable journal
//   resize, scale             queue launch(A), wait(B), hand B's   --->  piece per batch
//                                   bottlenecks on (in launch order) bounded
//
// Memory is bounded by --batch, --queue and the writer's depth, never by the dataset: the queue
// holds batch x queue_batches decoded images, the backend two slots, the writer `writer_depth`
// batches of features waiting plus the one being written.
// Errors: a bad file is skipped (one line; with --strict the run stops after the batches already
// launched). A network error (e.g. CUDA) or a writer error ends the run with that error, but
// only after every batch already handed to the writer is durable: nothing journaled is lost, and
// a rerun extracts the rest. A batch counts as extracted (progress, result) only once its piece
// is durable. Tests: tests/test_extract_pipeline.cpp (fake and CPU backends, injected failures),
// tests/test_extract.cpp (the tool, bit-identical to the pre-pipeline binary).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "engine/progress.h"
#include "models/bottleneck_backend.h"
#include "models/inception_v3_lowp.h"

namespace engine {

struct PipelineOptions {
  Preprocessing pre;
  int64_t max_pixels = DecodeOptions{}.max_pixels;
  int batch = 32;         // images per launch; at most the backend's max_batch()
  int workers = 0;        // decode threads; 0 = all cores
  int queue_batches = 4;  // decoded batches waiting for the network
  bool hash = true;       // SHA-256 of each file's bytes (the cache's content key)
};

// What the pipeline tells its caller. All on the caller's thread except `cached`.
struct PipelineHooks {
  // From the decode workers, concurrently: true when image `index` with content `sha256` needs no
  // network (already cached); it is then reported through `reused`. Empty: never.
  std::function<bool(size_t index, const std::string& sha256)> cached;
  std::function<void(size_t index)> reused;
  // A file that could not be read or decoded (one-line reason). Return true to stop (--strict):
  // the batches already launched are still delivered, then run_pipeline returns.
  std::function<bool(size_t index, const std::string& reason)> skipped;
  // One batch's bottlenecks, in launch order: image indices[i] has its 2048 values at
  // bottlenecks + i * 2048 (valid during the call only); sha256[i] is "" without `hash`.
  std::function<void(const std::vector<size_t>& indices, const std::vector<std::string>& sha256,
                     const float* bottlenecks)>
      batch;
};

struct PipelineStats {
  size_t batches = 0, images = 0;  // launched and delivered
  bool stopped = false;            // a `skipped` hook asked to stop
};

// Runs `files` (full paths) through `net`. Throws the first network or hook error once the decode
// workers are stopped and joined; batches delivered before it stay delivered.
PipelineStats run_pipeline(const std::vector<std::string>& files, BottleneckBackend& net,
                           const PipelineOptions& o, const PipelineHooks& h);

// ------------------------------------------------------------------------ extract into a cache

// Where extract_features looks up and stores features: a BottleneckCache, or a test's stand-in.
// `has` is called from the decode workers while `append` runs on the writer thread: both must be
// safe to call concurrently (BottleneckCache is).
struct CacheSink {
  std::function<bool(const std::string& key, const std::string& sha256)> has;
  std::function<void(const std::vector<CacheFeature>& batch)> append;  // durable when it returns
  static CacheSink of(BottleneckCache& cache);
};

struct ExtractItem {
  std::string file;  // full path to read
  std::string key;   // the cache key (the path as listed under --images)
};

struct ExtractOptions {
  PipelineOptions pipeline;
  bool strict = false;      // stop at the first bad image (Error, after the writer drained)
  size_t writer_depth = 2;  // batches waiting for the writer thread before the network waits
  std::function<void(const std::string& reason)> on_skip;  // one call per bad file, main thread
};

struct ExtractResult {
  std::vector<uint8_t> ok;  // per item: extracted now (durable) or reused from the cache
  size_t extracted = 0, reused = 0;
  std::vector<SkippedFile> skipped;  // in the order met, keyed by ExtractItem::key
};

// Extracts every item not already in `sink` and appends one durable piece per batch from a writer
// thread. `progress` (may be null) advances as images are reused, skipped or made durable.
ExtractResult extract_features(const std::vector<ExtractItem>& items, BottleneckBackend& net,
                               const CacheSink& sink, const ExtractOptions& o, Progress* progress);

// ------------------------------------------------------------------------ int8 calibration

struct CalibrationSample {
  Int8Calibration calibration;
  size_t tried = 0;    // files picked
  double seconds = 0;  // decoding and the fp32 network
};

// The int8 calibration of a fresh cache: up to `max_images` of `files` spread evenly over their
// sorted order (so every shard of one listing picks the same files, and merges agree), each
// preprocessed exactly as the pipeline does (`o.pre`, `o.max_pixels`), then calibrate_int8 on
// them. Unreadable files are skipped (not replaced); none usable throws one line.
CalibrationSample calibrate_on_files(const InceptionWeights& w, std::vector<std::string> files,
                                     const PipelineOptions& o, size_t max_images = 32);

}  // namespace engine
