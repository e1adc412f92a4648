// engine/cache_file.cpp: the consolidated cache file: validation, the streaming writer, the
// validating reader, read_cache and write_cache_atomic (declared in engine/cache_file.h and
// engine/bottleneck_cache.h; layout in weights/CACHE.md). All HDF5 access goes through
// engine/hdf5_io.h; the durable commit through engine/durable_file.h.
#include "engine/cache_file.h"

#include <unistd.h>

#include <cmath>
#include <cstring>

#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/sha256.h"

namespace engine {
namespace cache_detail {}  // namespace cache_detail

bool is_feature_precision(const std::string& s) {
  return s == "fp32" || s == "tf32" || s == "fp16" || s == "bf16" || s == "int8";
}
int64_t cache_format_version(const std::string& precision) {
  return precision == "fp32" ? kCacheFormatVersion : kCacheFormatVersionReduced;
}

namespace cache_detail {

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string shorten(const std::string& s) { return s.size() <= 80 ? s : s.substr(0, 77) + "..."; }

void check_finite_row(const float* f, size_t i, const std::string& path, const std::string& where) {
  for (size_t j = 0; j < kF; ++j)
    if (!std::isfinite(f[j]))
      fail(where, ": dataset '/features': non-finite value ", f[j], " at row ", i, " ('",
           shorten(path), "'), column ", j);
}

std::string settings_problem(const CacheSettings& s) {
  if (!is_feature_precision(s.precision))
    return "precision '" + shorten(s.precision) + "': expected " + kPrecisionList;
  if (s.precision == "int8" && s.calibration.empty())
    return "precision int8 without a calibration (the activation ranges its features were "
           "quantized with)";
  if (s.precision != "int8" && !s.calibration.empty())
    return "a calibration with precision " + s.precision + " (only int8 has one)";
  if (s.calibration.find_first_of("\n\r") != std::string::npos ||
      s.calibration.find('\0') != std::string::npos)
    return "calibration is not one line of text";
  return "";
}

void validate_contents(const CacheContents& c, const RowFn& row, const std::string& where) {
  size_t n = c.paths.size();
  const std::string bad = settings_problem(c.settings);
  if (!bad.empty()) fail(where, ": ", bad);
  auto same_n = [&](size_t got, const char* ds) {
    if (got != n)
      fail(where, ": dataset '", ds, "': expected ", n, " entries (as /paths), found ", got);
  };
  same_n(c.sha256.size(), "/sha256");
  same_n(c.labels.size(), "/labels");
  same_n(c.groups.size(), "/groups");
  for (size_t i = 0; i < n; ++i) {
    if (c.paths[i].empty() || c.paths[i].find('\0') != std::string::npos)
      fail(where, ": dataset '/paths': row ", i, ": empty path or NUL byte");
    if (i > 0 && !(c.paths[i - 1] < c.paths[i]))
      fail(where, ": dataset '/paths': not sorted by path or duplicated at row ", i, " ('",
           shorten(c.paths[i]), "' after '", shorten(c.paths[i - 1]), "')");
    if (!is_sha256_hex(c.sha256[i]))
      fail(where, ": dataset '/sha256': row ", i, " ('", shorten(c.paths[i]),
           "'): expected 64 lower-case hex characters, found '", shorten(c.sha256[i]), "'");
    int32_t l = c.labels[i];
    if (l < -1 || l >= static_cast<int64_t>(c.class_names.size()))
      fail(where, ": dataset '/labels': row ", i, " ('", shorten(c.paths[i]), "'): label ", l,
           " out of range [-1, ", c.class_names.size(), ")");
    if (row) check_finite_row(row(i), i, c.paths[i], where);
  }
}

bool same_settings(const CacheSettings& a, const CacheSettings& b) {
  return a.weights_sha256 == b.weights_sha256 && a.preprocessing == b.preprocessing &&
         a.precision == b.precision && a.calibration == b.calibration;
}
std::string settings_str(const CacheSettings& s) {
  std::string r = "weights_sha256 " + s.weights_sha256 + ", preprocessing '" + s.preprocessing +
                  "', precision " + s.precision;
  // The calibration is kilobytes of text: named by the start of its SHA-256, which is what tells
  // two apart in a message.
  if (!s.calibration.empty())
    r += " (calibration sha256 " +
         sha256_hex(reinterpret_cast<const uint8_t*>(s.calibration.data()), s.calibration.size())
             .substr(0, 12) +
         ")";
  return r;
}
bool skipped_less(const SkippedFile& a, const SkippedFile& b) {
  return a.path != b.path ? a.path < b.path : a.reason < b.reason;
}

// ---------------------------------------------------------------------------------- the writer
namespace {
// Every dataset and attribute of the layout. No object records modification times, so that the
// same contents give the same bytes (a merge and a single run write identical files).
// /features is written one 64-row chunk at a time from a single chunk buffer that `fill` fills,
// so the writer holds 512 KiB of features whatever N is.
void write_objects(hid_t f, const CacheContents& c, const FillFn& fill, FeatureMeter* meter,
                   const std::string& w) {
  const hsize_t n = c.paths.size();
  H5DatasetOptions plain;
  plain.track_times = false;
  {  // /features: (N, 2048) float32, chunked by rows, written one chunk at a time
    H5DatasetOptions o = plain;
    o.chunk = {kChunkRows, kF};
    o.unlimited_rows = true;
    // Fletcher-32 per chunk: a flipped bit in the features fails the read instead of training
    // on it (HDF5's own filter, so h5py reads the file unchanged).
    o.fletcher32 = true;
    H5Id d = h5_create_dataset(f, "/features", H5Type::F32, {n, kF}, w, o);
    FeatureBuffer buf(kChunkRows * kF, meter);
    for (hsize_t r0 = 0; r0 < n; r0 += kChunkRows) {
      hsize_t rows = std::min<hsize_t>(kChunkRows, n - r0);
      fill(r0, rows, buf.data());
      h5_write_float_rows(d.get(), r0, rows, buf.data(), w, "/features");
    }
  }
  h5_write_strings(f, "/paths", c.paths, 0, w, plain);
  h5_write_strings(f, "/sha256", c.sha256, 64, w, plain);
  h5_write_ints(f, "/labels", c.labels.data(), {n}, w, plain);
  h5_write_strings(f, "/groups", c.groups, 0, w, plain);
  h5_write_strings(f, "/class_names", c.class_names, 0, w, plain);
  {
    H5Id g = h5_create_group(f, "/skipped", w, false);
    std::vector<std::string> paths, reasons;
    for (const SkippedFile& s : c.skipped) paths.push_back(s.path), reasons.push_back(s.reason);
    h5_write_strings(f, "/skipped/paths", paths, 0, w, plain);
    h5_write_strings(f, "/skipped/reasons", reasons, 0, w, plain);
  }
  h5_write_int_attr(f, "format_version", cache_format_version(c.settings.precision), w);
  h5_write_string_attr(f, "weights_sha256", c.settings.weights_sha256, w);
  h5_write_string_attr(f, "preprocessing", c.settings.preprocessing, w);
  h5_write_string_attr(f, "precision", c.settings.precision, w);
  // Only int8 caches have one: other files stay byte for byte as before the attribute existed.
  if (!c.settings.calibration.empty())
    h5_write_string_attr(f, "calibration", c.settings.calibration, w);
  h5_write_string_attr(f, "engine_version", c.settings.engine_version, w);
  h5_write_int_attr(f, "n_images", static_cast<int64_t>(n), w);
  h5_write_int_attr(f, "feature_size", kCacheFeatureSize, w);
}
}  // namespace

void write_cache_rows(const std::string& path, const CacheContents& c, const FillFn& fill,
                      bool check_features, FeatureMeter* meter) {
  validate_contents(c, nullptr, path);
  FillFn checked = [&](size_t first, size_t rows, float* buf) {
    fill(first, rows, buf);
    if (check_features)
      for (size_t r = 0; r < rows; ++r)
        check_finite_row(buf + r * kF, first + r, c.paths[first + r], path);
  };
  std::string tmp = durable_tmp_name(path);
  try {
    // Written under the temporary's name (no atomicity here) and closed explicitly, so that a
    // failure of the final flush (e.g. disk full) is reported.
    H5File f = H5File::create(tmp);
    write_objects(f.id(), c, checked, meter, tmp);
    f.close();
  } catch (...) {
    ::unlink(tmp.c_str());  // never leave a half-written temporary behind an error
    throw;
  }
  commit_file_durable(tmp, path, "consolidated");
}

// ------------------------------------------------------------------------- the validating reader
namespace {
// Opens `obj`, checks its element type (`dtype` as h5_dtype_desc names it; "strings" accepts
// both kinds) and rank; the shape is checked by the caller.
H5Dataset open_checked(hid_t f, const std::string& obj, const char* dtype, size_t rank,
                       const std::string& where) {
  H5Dataset d = h5_open_dataset(f, obj, where);
  const bool is_string = d.dtype == "vlen string" || d.dtype == "fixed string";
  if (std::string(dtype) == "strings" ? !is_string : d.dtype != dtype)
    fail(where, ": dataset '", obj, "': expected ", dtype, ", found ", d.dtype);
  if (d.dims.size() != rank)
    fail(where, ": dataset '", obj, "': expected rank ", rank, ", found ", d.dims.size());
  return d;
}

void expect_dims(const H5Dataset& d, const std::vector<hsize_t>& want, const std::string& obj,
                 const std::string& where) {
  if (d.dims != want)
    fail(where, ": dataset '", obj, "': expected shape ", h5_dims_str(want), ", found ",
         h5_dims_str(d.dims));
}

// A 1-D string dataset, fixed or variable length; `n` < 0 accepts any length.
std::vector<std::string> read_strings(hid_t f, const std::string& obj, int64_t n,
                                      const std::string& where) {
  H5Dataset d = open_checked(f, obj, "strings", 1, where);
  if (n >= 0) expect_dims(d, {static_cast<hsize_t>(n)}, obj, where);
  return h5_read_strings(d, where, obj);
}
}  // namespace

OpenCache open_cache(const std::string& path) {
  OpenCache o;
  o.file = H5File::open_read(path);
  hid_t f = o.file.id();
  CacheContents& c = o.c;
  int64_t version = h5_read_int_attr(f, "format_version", path);
  if (version != kCacheFormatVersion && version != kCacheFormatVersionReduced)
    fail(path, ": attribute 'format_version': expected ", kCacheFormatVersion, " or ",
         kCacheFormatVersionReduced, ", found ", version, " (written by another engine version?)");
  // Caches written before the attribute existed are fp32 (only the CPU wrote them).
  c.settings.precision =
      h5_has_attr(f, "precision") ? h5_read_string_attr(f, "precision", path) : "fp32";
  if (!is_feature_precision(c.settings.precision))
    fail(path, ": attribute 'precision': expected ", kPrecisionList, ", found '",
         shorten(c.settings.precision), "'");
  if (version != cache_format_version(c.settings.precision))
    fail(path, ": attribute 'format_version' is ", version, " but 'precision' is ",
         c.settings.precision, " (fp32 caches are version 1, the others version 2)");
  c.settings.calibration =
      h5_has_attr(f, "calibration") ? h5_read_string_attr(f, "calibration", path) : "";
  {
    const std::string bad = settings_problem(c.settings);
    if (!bad.empty()) fail(path, ": attributes 'precision'/'calibration': ", bad);
  }
  int64_t feature_size = h5_read_int_attr(f, "feature_size", path);
  if (feature_size != kCacheFeatureSize)
    fail(path, ": attribute 'feature_size': expected ", kCacheFeatureSize, ", found ",
         feature_size);
  c.settings.weights_sha256 = h5_read_string_attr(f, "weights_sha256", path);
  c.settings.preprocessing = h5_read_string_attr(f, "preprocessing", path);
  c.settings.engine_version = h5_read_string_attr(f, "engine_version", path);
  c.paths = read_strings(f, "/paths", -1, path);
  const int64_t n = static_cast<int64_t>(c.paths.size());
  int64_t n_images = h5_read_int_attr(f, "n_images", path);
  if (n_images != n)
    fail(path, ": attribute 'n_images' says ", n_images, " but dataset '/paths' holds ", n);
  c.sha256 = read_strings(f, "/sha256", n, path);
  c.groups = read_strings(f, "/groups", n, path);
  c.class_names = read_strings(f, "/class_names", -1, path);
  {
    H5Dataset d = open_checked(f, "/labels", "int32", 1, path);
    expect_dims(d, {static_cast<hsize_t>(n)}, "/labels", path);
    c.labels.resize(static_cast<size_t>(n));
    if (n > 0) h5_read_ints(d, c.labels.data(), path, "/labels");
  }
  o.features = open_checked(f, "/features", "float32", 2, path);
  expect_dims(o.features, {static_cast<hsize_t>(n), kF}, "/features", path);
  std::vector<std::string> sk_paths = read_strings(f, "/skipped/paths", -1, path);
  std::vector<std::string> sk_reasons =
      read_strings(f, "/skipped/reasons", static_cast<int64_t>(sk_paths.size()), path);
  for (size_t i = 0; i < sk_paths.size(); ++i) c.skipped.push_back({sk_paths[i], sk_reasons[i]});
  return o;
}

H5Dataset open_features(const H5File& f, size_t rows) {
  H5Dataset d = open_checked(f.id(), "/features", "float32", 2, f.path());
  expect_dims(d, {rows, kF}, "/features", f.path());
  return d;
}

const float* RowReader::row(size_t r) {
  if (r < first_ || r >= first_ + rows_) {
    if (!buf_) buf_.emplace(kChunkRows * kF, meter_);
    first_ = r / kChunkRows * kChunkRows;
    rows_ = std::min<size_t>(kChunkRows, n_ - first_);
    // One hyperslab read of the whole chunk; HDF5 verifies its Fletcher-32 on the way.
    h5_read_float_rows(dset_, first_, rows_, buf_->data(), where_, "/features");
    if (paths_)
      for (size_t k = 0; k < rows_; ++k)
        check_finite_row(buf_->data() + k * kF, first_ + k, (*paths_)[first_ + k], where_);
  }
  return buf_->data() + (r - first_) * kF;
}

void verify_features(const OpenCache& o, FeatureMeter* meter, const std::string& where) {
  RowReader rows(o.features.id.get(), o.c.size(), &o.c.paths, meter, where);
  for (size_t r = 0; r < o.c.size(); r += kChunkRows) rows.row(r);
}

}  // namespace cache_detail

using namespace cache_detail;

CacheContents read_cache(const std::string& path) {
  OpenCache o = open_cache(path);
  CacheContents& c = o.c;
  c.features.resize(c.size() * kF);
  if (c.size() > 0) h5_read_floats(o.features, c.features.data(), path, "/features");
  validate_contents(
      c, [&](size_t i) { return &c.features[i * kF]; }, path);
  return std::move(o.c);
}

void write_cache_atomic(const std::string& path, const CacheContents& c) {
  if (c.features.size() != c.paths.size() * kF)
    fail(path, ": dataset '/features': expected ", c.paths.size(), " x ", kF, " values, found ",
         c.features.size());
  validate_contents(
      c, [&](size_t i) { return &c.features[i * kF]; }, path);
  write_cache_rows(
      path, c,
      [&](size_t first, size_t rows, float* buf) {
        std::memcpy(buf, &c.features[first * kF], rows * kRowBytes);
      },
      false, nullptr);
}

}  // namespace engine
