// engine/bottleneck_cache.h: the crash-safe, resumable HDF5 cache of 2048-value bottlenecks that
// tools/extract writes and tools/train reads (layout: weights/CACHE.md).
//
// Crash safety by construction: the consolidated file `<cache>.h5` is only ever replaced whole
// (written to a temporary name, fsync'ed, renamed, directory fsync'ed), so it is always either the
// previous complete cache or the new one. While a run extracts, every batch goes to a journal
// piece in `<cache>.h5.journal/` that is likewise written to a temporary name, fsync'ed and
// renamed: a piece is either absent or complete (and checksummed). A rerun after a kill -9 loads
// the consolidated file, replays every complete piece, ignores temporaries, and extracts only what
// is missing. finalize() writes the new consolidated file and then removes the journal. A lock
// file stops two processes from writing one cache.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/inception_contract.h"
#include "engine/sha256.h"  // sha256_hex / sha256_file: the content hashes stored here

namespace engine {

constexpr int64_t kCacheFeatureSize = kBottleneckSize;  // engine/inception_contract.h
// format_version 1: fp32 features (the `precision` attribute is "fp32" or absent, as in caches
// written before it existed); 2: reduced-precision features (tf32, fp16, bf16, int8), so that a
// reader that does not know `precision` refuses the file instead of mixing its own fp32 features
// into it.
constexpr int64_t kCacheFormatVersion = 1;
constexpr int64_t kCacheFormatVersionReduced = 2;

// The arithmetic the features were computed in (tools/extract --precision): "fp32" (exact: the
// CPU and the GPU give the same setting, within the fp32 tolerance), "tf32" or "fp16" (GPU only),
// "bf16" or "int8" (CPU only, models/inception_v3_lowp.h).
bool is_feature_precision(const std::string& s);
int64_t cache_format_version(const std::string& precision);  // 1 for fp32, else 2

// What makes two caches comparable; a cache made with other settings is refused (unless forced).
struct CacheSettings {
  std::string weights_sha256;      // SHA-256 (hex) of the Inception weight file
  std::string preprocessing;       // Preprocessing::key() (engine/preprocessing.h): compared as is
  std::string engine_version;      // informational, not compared
  std::string precision = "fp32";  // is_feature_precision(); compared (fp32 CPU == fp32 GPU)
  // int8 only (else ""): the activation ranges the features were quantized with, as one line of
  // text (Int8Calibration::serialize, models/inception_v3_lowp.h); compared as text, since other
  // ranges give other features. Opaque here: the cache checks only that it is one line.
  std::string calibration;
};

// One image's bottleneck, as extracted (journal pieces hold exactly this).
struct CacheFeature {
  std::string path;            // relative to the image root, '/'-separated: the key
  std::string sha256;          // hex SHA-256 of the file's bytes: changed content = re-extract
  std::vector<float> feature;  // kCacheFeatureSize values
};

// What the current listing says about an image (labels can change without the bytes changing).
struct ImageMeta {
  std::string path;
  int32_t label = -1;  // index into class_names; -1 = unlabelled
  std::string group;   // lesion / patient id, "" when none
};

struct SkippedFile {
  std::string path, reason;
};

// The full content of a consolidated cache, sorted by path.
struct CacheContents {
  CacheSettings settings;
  std::vector<std::string> class_names;
  std::vector<std::string> paths, sha256, groups;
  std::vector<int32_t> labels;
  std::vector<float> features;  // paths.size() x kCacheFeatureSize, row-major
  std::vector<SkippedFile> skipped;
  size_t size() const { return paths.size(); }
};

// Reads and validates a consolidated cache (format_version, dataset shapes and dtypes, counts,
// finite features, labels in range). Errors are one line naming the file and the dataset.
CacheContents read_cache(const std::string& path);
// Writes `c` to `path` atomically (tmp + fsync + rename + directory fsync); sorts nothing.
void write_cache_atomic(const std::string& path, const CacheContents& c);
// Joins shard caches into one; settings and class names must agree and a path may appear only in
// one input (else one-line error). The result equals a single run over the union (sorted by path).
// Streams: holds the inputs' paths and hashes, never their features (see weights/CACHE.md).
void merge_caches(const std::vector<std::string>& inputs, const std::string& out);
// The same; when `peak_feature_bytes` is not null it receives the most bytes of feature data the
// merge held at once: its output chunk and one staging chunk per input, (1 + inputs) x 512 KiB,
// independent of the inputs' sizes.
void merge_caches(const std::vector<std::string>& inputs, const std::string& out,
                  size_t* peak_feature_bytes);

// The settings of the cache at `path` as a run would find them, without locking or changing
// anything: the consolidated file's (checked as read_cache checks them, the features excepted),
// else those of the first complete journal piece (a run killed before its first finalize), else
// nullopt (no cache yet). tools/extract reads them first so that a resumed run keeps the cache's
// precision (--precision auto) and its int8 calibration (bit-identical to an unbroken run).
std::optional<CacheSettings> peek_cache_settings(const std::string& path);

class BottleneckCache {
 public:
  // Opens `path` for an extraction run: takes the lock, loads the consolidated file if present,
  // replays the journal. A cache with other weights, preprocessing, precision or calibration
  // throws unless `force` (then existing content and journal are discarded). A corrupt
  // consolidated file throws naming it (the user may delete it or use force).
  BottleneckCache(const std::string& path, const CacheSettings& settings, bool force);
  ~BottleneckCache();
  BottleneckCache(const BottleneckCache&) = delete;
  BottleneckCache& operator=(const BottleneckCache&) = delete;

  // has(), cached() and journal_pieces() may be called from any thread while append() runs on
  // another; append() and finalize() are called from one thread at a time.
  // True when a feature for this path with this content hash is already cached.
  bool has(const std::string& path, const std::string& sha256) const;
  size_t cached() const;          // features known (consolidated + journal)
  size_t journal_pieces() const;  // complete pieces replayed or written in this run
  // The most bytes of feature data this object has held at once (chunk and journal I/O buffers):
  // features are never kept, only where they lie, so this does not grow with the cache's size.
  size_t peak_feature_bytes() const;

  // Makes one batch durable: a new journal piece, complete and fsync'ed before this returns.
  void append(const std::vector<CacheFeature>& batch);

  // Writes the consolidated file for exactly the images in `current` (entries for other paths
  // are dropped; labels and groups are taken from `current`), with the class names and the
  // skipped list, then removes the journal. Images in `current` without a feature are an error
  // (the caller lists them as skipped instead). Streams: the features are read back from the old
  // file and the journal one 64-row chunk at a time (peak_feature_bytes() stays at 1 MiB).
  void finalize(const std::vector<ImageMeta>& current, const std::vector<std::string>& class_names,
                const std::vector<SkippedFile>& skipped);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace engine
