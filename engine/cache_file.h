// engine/cache_file.h: the bottleneck cache's consolidated HDF5 file (layout: weights/CACHE.md),
// the internals that the cache's parts share: the streaming writer (features one 64-row chunk at
// a time, committed durably through engine/durable_file.h), the validating reader (open_cache
// reads and checks everything but the features; RowReader streams those, Fletcher-32 and
// finiteness checked per chunk), and the feature-memory meter. The public entry points
// (read_cache, write_cache_atomic) are declared in engine/bottleneck_cache.h; the other parts are
// engine/cache_merge.cpp, engine/cache_journal.{h,cpp} and engine/bottleneck_cache.cpp.
// Tests: tests/test_cache_file.cpp, tests/test_cache_read.cpp.
#pragma once
#include <algorithm>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"
#include "engine/hdf5_io.h"

namespace engine::cache_detail {

constexpr size_t kChunkRows = 64;  // 512 KiB chunks: fit h5py's default 1 MiB chunk cache
constexpr size_t kF = static_cast<size_t>(kCacheFeatureSize);
constexpr size_t kRowBytes = kF * sizeof(float);

// The memory bound of weights/CACHE.md made observable: every buffer that can hold feature
// values (chunk buffers, journal I/O buffers) registers its size here while it lives, and `peak`
// is the most ever held at once (BottleneckCache::peak_feature_bytes, merge_caches' out-param).
struct FeatureMeter {
  size_t now = 0, peak = 0;
};
class FeatureBuffer {
 public:
  FeatureBuffer(size_t floats, FeatureMeter* meter) : data_(floats), meter_(meter) {
    if (meter_) meter_->now += bytes(), meter_->peak = std::max(meter_->peak, meter_->now);
  }
  ~FeatureBuffer() {
    if (meter_) meter_->now -= bytes();
  }
  FeatureBuffer(const FeatureBuffer&) = delete;
  FeatureBuffer& operator=(const FeatureBuffer&) = delete;
  float* data() { return data_.data(); }
  char* bytes_data() { return reinterpret_cast<char*>(data_.data()); }
  size_t bytes() const { return data_.size() * sizeof(float); }

 private:
  std::vector<float> data_;
  FeatureMeter* meter_;
};

using RowFn = std::function<const float*(size_t row)>;
// Fills rows [first, first + rows) of the file being written into `buf` (rows x kF floats).
using FillFn = std::function<void(size_t first, size_t rows, float* buf)>;

bool is_sha256_hex(const std::string& s);
std::string shorten(const std::string& s);  // at most 80 characters, for messages
void check_finite_row(const float* f, size_t i, const std::string& path, const std::string& where);
// The invariants every consolidated cache satisfies, checked before writing and after reading.
// Without `row` the features are not checked here (the streaming writers check them per chunk).
void validate_contents(const CacheContents& c, const RowFn& row, const std::string& where);

// Validates everything but the features, writes `<path>.tmp.<pid>` (features chunk by chunk from
// `fill`; with `check_features` each filled chunk is checked finite, naming `path`) and commits
// it durably (fsync, rename, directory fsync). Any failure removes the temporary.
void write_cache_rows(const std::string& path, const CacheContents& c, const FillFn& fill,
                      bool check_features, FeatureMeter* meter);

// An opened consolidated cache: everything but the features read and shape-checked, /features
// open with its shape (N, 2048) checked. The caller validates (validate_contents) and reads the
// features: all at once (read_cache) or a chunk at a time (RowReader).
struct OpenCache {
  H5File file;
  H5Dataset features;
  CacheContents c;  // c.features stays empty
};
OpenCache open_cache(const std::string& path);
// /features of a consolidated file already validated whole, checked to hold `rows` rows.
H5Dataset open_features(const H5File& f, size_t rows);

// Random access to the rows of an open consolidated cache, for callers that ask for rows in
// increasing order (finalize, merge: everything is sorted by path): the 64-row block (one HDF5
// chunk) holding the row is read whole into one staging buffer, so each chunk is read and
// checksummed once and no irregular HDF5 selection is ever built (those are slow). With `paths`,
// every loaded row is checked finite, naming `where`, the row and its path.
class RowReader {
 public:
  RowReader(hid_t dset, size_t n, const std::vector<std::string>* paths, FeatureMeter* meter,
            const std::string& where)
      : dset_(dset), n_(n), paths_(paths), meter_(meter), where_(where) {}
  const float* row(size_t r);

 private:
  hid_t dset_;
  size_t n_;
  const std::vector<std::string>* paths_;
  FeatureMeter* meter_;
  std::string where_;
  std::optional<FeatureBuffer> buf_;  // allocated on first use
  size_t first_ = 0, rows_ = 0;
};

// The checks read_cache makes on the features (Fletcher-32, finite), streamed in 64-row chunks.
void verify_features(const OpenCache& o, FeatureMeter* meter, const std::string& where);

// Settings and lists, as the cache and merge compare and print them.
constexpr const char* kPrecisionList = "fp32, tf32, fp16, bf16 or int8";
// "" when `s` is coherent (a known precision; a one-line calibration exactly when int8), else why.
std::string settings_problem(const CacheSettings& s);
// Weights, preprocessing, precision and calibration equal (engine_version is not compared).
bool same_settings(const CacheSettings& a, const CacheSettings& b);
std::string settings_str(const CacheSettings& s);
bool skipped_less(const SkippedFile& a, const SkippedFile& b);

}  // namespace engine::cache_detail
