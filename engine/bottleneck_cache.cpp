// engine/bottleneck_cache.cpp: the crash-safe bottleneck cache declared in bottleneck_cache.h:
// durable file primitives (tmp + fsync + rename + directory fsync), the
// consolidated HDF5 writer and validating reader, the binary journal pieces, BottleneckCache
// (lock, load, replay, append, finalize) and merge_caches. Layout: weights/CACHE.md. Memory: the
// cache holds an index (path -> hash, row or piece offset), never the features; finalize and
// merge_caches stream them in 64-row chunks (weights/CACHE.md, "Memory").
// Tests: tests/test_cache.cpp (crash tests kill a child at the points named by crash_point()).
#include "engine/bottleneck_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <functional>
#include <optional>
#include <iostream>
#include <unordered_map>

#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/sha256.h"

// Journal pieces store raw float32 and integers in host order; the format says little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal pieces assume little-endian");

namespace engine {


namespace {

// -------------------------------------------------------------------- consolidated HDF5 file
using RowFn = std::function<const float*(size_t row)>;
// Fills rows [first, first + rows) of the file being written into `buf` (rows x kF floats).
using FillFn = std::function<void(size_t first, size_t rows, float* buf)>;
constexpr hsize_t kChunkRows = 64;  // 512 KiB chunks: fit h5py's default 1 MiB chunk cache
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

// The innermost message of HDF5's error stack, so a failed write says why (e.g. disk full).
std::string h5_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &reason);
  return reason.empty() ? "" : " (" + reason + ")";
}

H5Id h5_check(hid_t id, const std::string& where, const char* call, const std::string& obj) {
  if (id < 0) fail(where, ": ", call, " failed for '", obj, "'", h5_reason());
  return H5Id(id);
}
void h5_check(herr_t rc, const std::string& where, const char* call, const std::string& obj, int) {
  if (rc < 0) fail(where, ": ", call, " failed for '", obj, "'", h5_reason());
}

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

// The invariants every consolidated cache satisfies, checked before writing and after reading.
// Without `row` the features are not checked here (the streaming writers check them per chunk).
void validate_contents(const CacheContents& c, const RowFn& row, const std::string& where) {
  size_t n = c.paths.size();
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

// Creation properties shared by every object: no modification times, so that the same contents
// give the same bytes (a merge and a single run write identical files).
H5Id object_props(hid_t cls, const std::string& where, const std::string& obj) {
  H5Id p = h5_check(H5Pcreate(cls), where, "H5Pcreate", obj);
  h5_check(H5Pset_obj_track_times(p.get(), 0), where, "H5Pset_obj_track_times", obj, 0);
  return p;
}

H5Id string_type(bool variable, size_t fixed_len, const std::string& where,
                 const std::string& obj) {
  H5Id t = h5_check(H5Tcopy(H5T_C_S1), where, "H5Tcopy", obj);
  if (variable) {
    h5_check(H5Tset_size(t.get(), H5T_VARIABLE), where, "H5Tset_size", obj, 0);
    h5_check(H5Tset_cset(t.get(), H5T_CSET_UTF8), where, "H5Tset_cset", obj, 0);
  } else {
    h5_check(H5Tset_size(t.get(), fixed_len), where, "H5Tset_size", obj, 0);
    h5_check(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), where, "H5Tset_strpad", obj, 0);
  }
  return t;
}

// A 1-D string dataset: variable-length UTF-8, or fixed `fixed_len` bytes (ASCII, NUL-padded).
void write_strings(hid_t loc, const std::string& obj, const std::vector<std::string>& v,
                   size_t fixed_len, const std::string& where) {
  bool variable = fixed_len == 0;
  H5Id type = string_type(variable, fixed_len, where, obj);
  hsize_t dims[1] = {v.size()};
  H5Id space = h5_check(H5Screate_simple(1, dims, nullptr), where, "H5Screate_simple", obj);
  H5Id dcpl = object_props(H5P_DATASET_CREATE, where, obj);
  H5Id d = h5_check(
      H5Dcreate2(loc, obj.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
      where, "H5Dcreate2", obj);
  if (v.empty()) return;
  if (variable) {
    std::vector<const char*> ptrs;
    for (const std::string& s : v) ptrs.push_back(s.c_str());
    h5_check(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where,
             "H5Dwrite", obj, 0);
  } else {
    std::string buf(v.size() * fixed_len, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].size() > fixed_len)
        fail(where, ": dataset '", obj, "': string longer than ", fixed_len);
      std::memcpy(&buf[i * fixed_len], v[i].data(), v[i].size());
    }
    h5_check(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), where,
             "H5Dwrite", obj, 0);
  }
}

void write_string_attr(hid_t loc, const char* name, const std::string& value,
                       const std::string& where) {
  H5Id type = string_type(true, 0, where, name);
  H5Id space = h5_check(H5Screate(H5S_SCALAR), where, "H5Screate", name);
  H5Id a = h5_check(H5Acreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), where,
                    "H5Acreate2", name);
  const char* p = value.c_str();
  h5_check(H5Awrite(a.get(), type.get(), &p), where, "H5Awrite", name, 0);
}

void write_int_attr(hid_t loc, const char* name, int64_t value, const std::string& where) {
  H5Id space = h5_check(H5Screate(H5S_SCALAR), where, "H5Screate", name);
  H5Id a = h5_check(H5Acreate2(loc, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    where, "H5Acreate2", name);
  h5_check(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), where, "H5Awrite", name, 0);
}

// Every dataset and attribute of the layout; each handle is closed when this returns.
// /features is written one 64-row chunk at a time from a single chunk buffer that `fill` fills,
// so the writer holds 512 KiB of features whatever N is.
void write_objects(hid_t f, const CacheContents& c, const FillFn& fill, FeatureMeter* meter,
                   const std::string& w) {
  {
    const hsize_t n = c.paths.size();
    {  // /features: (N, 2048) float32, chunked by rows, written one chunk at a time
      const std::string obj = "/features";
      hsize_t dims[2] = {n, kF}, maxdims[2] = {H5S_UNLIMITED, kF}, chunk[2] = {kChunkRows, kF};
      H5Id space = h5_check(H5Screate_simple(2, dims, maxdims), w, "H5Screate_simple", obj);
      H5Id dcpl = object_props(H5P_DATASET_CREATE, w, obj);
      h5_check(H5Pset_chunk(dcpl.get(), 2, chunk), w, "H5Pset_chunk", obj, 0);
      // Fletcher-32 per chunk: a flipped bit in the features fails the read instead of training
      // on it (HDF5's own filter, so h5py reads the file unchanged).
      h5_check(H5Pset_fletcher32(dcpl.get()), w, "H5Pset_fletcher32", obj, 0);
      H5Id d = h5_check(H5Dcreate2(f, obj.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                   dcpl.get(), H5P_DEFAULT),
                        w, "H5Dcreate2", obj);
      FeatureBuffer buf(kChunkRows * kF, meter);
      for (hsize_t r0 = 0; r0 < n; r0 += kChunkRows) {
        hsize_t rows = std::min(kChunkRows, n - r0);
        fill(r0, rows, buf.data());
        hsize_t start[2] = {r0, 0}, count[2] = {rows, kF};
        h5_check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                 w, "H5Sselect_hyperslab", obj, 0);
        H5Id mem = h5_check(H5Screate_simple(2, count, nullptr), w, "H5Screate_simple", obj);
        h5_check(
            H5Dwrite(d.get(), H5T_NATIVE_FLOAT, mem.get(), space.get(), H5P_DEFAULT, buf.data()), w,
            "H5Dwrite", obj, 0);
      }
    }
    write_strings(f, "/paths", c.paths, 0, w);
    write_strings(f, "/sha256", c.sha256, 64, w);
    {
      const std::string obj = "/labels";
      hsize_t dims[1] = {n};
      H5Id space = h5_check(H5Screate_simple(1, dims, nullptr), w, "H5Screate_simple", obj);
      H5Id dcpl = object_props(H5P_DATASET_CREATE, w, obj);
      H5Id d = h5_check(H5Dcreate2(f, obj.c_str(), H5T_STD_I32LE, space.get(), H5P_DEFAULT,
                                   dcpl.get(), H5P_DEFAULT),
                        w, "H5Dcreate2", obj);
      if (n > 0)
        h5_check(
            H5Dwrite(d.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.labels.data()), w,
            "H5Dwrite", obj, 0);
    }
    write_strings(f, "/groups", c.groups, 0, w);
    write_strings(f, "/class_names", c.class_names, 0, w);
    {
      H5Id gcpl = object_props(H5P_GROUP_CREATE, w, "/skipped");
      H5Id g = h5_check(H5Gcreate2(f, "/skipped", H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), w,
                        "H5Gcreate2", "/skipped");
      std::vector<std::string> paths, reasons;
      for (const SkippedFile& s : c.skipped) paths.push_back(s.path), reasons.push_back(s.reason);
      write_strings(f, "/skipped/paths", paths, 0, w);
      write_strings(f, "/skipped/reasons", reasons, 0, w);
    }
    write_int_attr(f, "format_version", kCacheFormatVersion, w);
    write_string_attr(f, "weights_sha256", c.settings.weights_sha256, w);
    write_string_attr(f, "preprocessing", c.settings.preprocessing, w);
    write_string_attr(f, "engine_version", c.settings.engine_version, w);
    write_int_attr(f, "n_images", static_cast<int64_t>(n), w);
    write_int_attr(f, "feature_size", kCacheFeatureSize, w);
  }
}

// Writes the whole HDF5 file at `file_path` (no atomicity here; see write_cache_rows). The file
// is closed explicitly so that a failure of the final flush (e.g. disk full) is reported.
void write_hdf5(const std::string& file_path, const CacheContents& c, const FillFn& fill,
                FeatureMeter* meter) {
  hid_t f = H5Fcreate(file_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) fail(file_path, ": H5Fcreate failed", h5_reason());
  try {
    write_objects(f, c, fill, meter, file_path);
  } catch (...) {
    H5Fclose(f);
    throw;
  }
  if (H5Fclose(f) < 0) fail(file_path, ": H5Fclose failed", h5_reason());
}

// Validates everything but the features, writes `<path>.tmp.<pid>` (features chunk by chunk from
// `fill`; with `check_features` each filled chunk is checked finite, naming `path`), fsyncs it,
// renames it over `path`, fsyncs the directory. Any failure removes the temporary.
void write_cache_rows(const std::string& path, const CacheContents& c, const FillFn& fill,
                      bool check_features, FeatureMeter* meter) {
  h5_silence_errors();
  validate_contents(c, nullptr, path);
  FillFn checked = [&](size_t first, size_t rows, float* buf) {
    fill(first, rows, buf);
    if (check_features)
      for (size_t r = 0; r < rows; ++r)
        check_finite_row(buf + r * kF, first + r, c.paths[first + r], path);
  };
  std::string tmp = durable_tmp_name(path);
  try {
    write_hdf5(tmp, c, checked, meter);
  } catch (...) {
    ::unlink(tmp.c_str());  // never leave a half-written temporary behind an error
    throw;
  }
  commit_file_durable(tmp, path, "consolidated");
}

// ------------------------------------------------------------------------ validating reader
std::string type_desc(hid_t t) {
  switch (H5Tget_class(t)) {
    case H5T_FLOAT: return "float" + std::to_string(8 * H5Tget_size(t));
    case H5T_INTEGER:
      return std::string(H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") +
             std::to_string(8 * H5Tget_size(t));
    case H5T_STRING: return H5Tis_variable_str(t) > 0 ? "vlen string" : "fixed string";
    default: return "another type";
  }
}

std::string dims_str(const std::vector<hsize_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

struct Dataset {
  H5Id dset, type, space;
  std::vector<hsize_t> dims;
};

// Opens `obj`, checks its type class (and size when `size` > 0) and its rank; shape by caller.
Dataset open_dataset(hid_t f, const std::string& obj, H5T_class_t cls, size_t size, int rank,
                     const char* expected_type, const std::string& where) {
  if (!h5_exists(f, obj)) fail(where, ": missing dataset '", obj, "'");
  Dataset d;
  d.dset = H5Id(H5Dopen2(f, obj.c_str(), H5P_DEFAULT));
  if (!d.dset.valid()) fail(where, ": '", obj, "' is not a dataset (or is corrupt)");
  d.type = h5_check(H5Dget_type(d.dset.get()), where, "H5Dget_type", obj);
  d.space = h5_check(H5Dget_space(d.dset.get()), where, "H5Dget_space", obj);
  bool signed_ok = cls != H5T_INTEGER || H5Tget_sign(d.type.get()) == H5T_SGN_2;
  if (H5Tget_class(d.type.get()) != cls || (size > 0 && H5Tget_size(d.type.get()) != size) ||
      !signed_ok)
    fail(where, ": dataset '", obj, "': expected ", expected_type, ", found ",
         type_desc(d.type.get()));
  int r = H5Sget_simple_extent_ndims(d.space.get());
  if (r != rank) fail(where, ": dataset '", obj, "': expected rank ", rank, ", found ", r);
  d.dims.resize(static_cast<size_t>(rank));
  if (H5Sget_simple_extent_dims(d.space.get(), d.dims.data(), nullptr) < 0)
    fail(where, ": dataset '", obj, "': cannot read its shape");
  return d;
}

void expect_dims(const Dataset& d, const std::vector<hsize_t>& want, const std::string& obj,
                 const std::string& where) {
  if (d.dims != want)
    fail(where, ": dataset '", obj, "': expected shape ", dims_str(want), ", found ",
         dims_str(d.dims));
}

// A 1-D string dataset, fixed or variable length; `n` < 0 accepts any length.
std::vector<std::string> read_strings(hid_t f, const std::string& obj, int64_t n,
                                      const std::string& where) {
  Dataset d = open_dataset(f, obj, H5T_STRING, 0, 1, "strings", where);
  if (n >= 0) expect_dims(d, {static_cast<hsize_t>(n)}, obj, where);
  size_t count = d.dims[0];
  std::vector<std::string> out;
  if (count == 0) return out;
  out.reserve(count);
  if (H5Tis_variable_str(d.type.get()) > 0) {
    H5Id mem = string_type(true, 0, where, obj);
    std::vector<char*> ptrs(count, nullptr);
    h5_check(H5Dread(d.dset.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where,
             "H5Dread", obj, 0);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem.get(), d.space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(d.type.get());
    H5Id mem = string_type(false, len, where, obj);
    std::vector<char> buf(len * count);
    h5_check(H5Dread(d.dset.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), where,
             "H5Dread", obj, 0);
    for (size_t i = 0; i < count; ++i) out.emplace_back(&buf[i * len], strnlen(&buf[i * len], len));
  }
  return out;
}

// An opened consolidated cache: everything but the features read and shape-checked, /features
// open with its shape (N, 2048) checked. The caller validates (validate_contents) and reads the
// features: all at once (read_cache) or a chunk at a time (RowReader).
struct OpenCache {
  H5File file;
  Dataset features;
  CacheContents c;  // c.features stays empty
};

OpenCache open_cache(const std::string& path) {
  OpenCache o;
  o.file = H5File::open_read(path);
  hid_t f = o.file.id();
  CacheContents& c = o.c;
  int64_t version = h5_read_int_attr(f, "format_version", path);
  if (version != kCacheFormatVersion)
    fail(path, ": attribute 'format_version': expected ", kCacheFormatVersion, ", found ", version,
         " (written by another engine version?)");
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
    Dataset d = open_dataset(f, "/labels", H5T_INTEGER, 4, 1, "int32", path);
    expect_dims(d, {static_cast<hsize_t>(n)}, "/labels", path);
    c.labels.resize(static_cast<size_t>(n));
    if (n > 0)
      h5_check(
          H5Dread(d.dset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.labels.data()),
          path, "H5Dread", "/labels", 0);
  }
  o.features = open_dataset(f, "/features", H5T_FLOAT, 4, 2, "float32", path);
  expect_dims(o.features, {static_cast<hsize_t>(n), kF}, "/features", path);
  std::vector<std::string> sk_paths = read_strings(f, "/skipped/paths", -1, path);
  std::vector<std::string> sk_reasons =
      read_strings(f, "/skipped/reasons", static_cast<int64_t>(sk_paths.size()), path);
  for (size_t i = 0; i < sk_paths.size(); ++i) c.skipped.push_back({sk_paths[i], sk_reasons[i]});
  return o;
}

// Reads rows [first, first + rows) of the (N, 2048) dataset `dset` into `buf` with one hyperslab
// read; HDF5 verifies each chunk's Fletcher-32 on the way.
void read_block(hid_t dset, size_t first, size_t rows, float* buf, const std::string& where) {
  const std::string obj = "/features";
  H5Id fspace = h5_check(H5Dget_space(dset), where, "H5Dget_space", obj);
  hsize_t start[2] = {first, 0}, count[2] = {rows, kF};
  h5_check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
           where, "H5Sselect_hyperslab", obj, 0);
  H5Id mspace = h5_check(H5Screate_simple(2, count, nullptr), where, "H5Screate_simple", obj);
  h5_check(H5Dread(dset, H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), H5P_DEFAULT, buf), where,
           "H5Dread", obj, 0);
}

// Random access to the rows of an open consolidated cache, for callers that ask for rows in
// increasing order (finalize, merge: everything is sorted by path): the 64-row block (one HDF5
// chunk) holding the row is read whole into one staging buffer, so each chunk is read and
// checksummed once and no irregular HDF5 selection is ever built (those are slow). With `paths`,
// every loaded row is checked finite, naming `where`, the row and its path.
class RowReader {
 public:
  // `dset`: an (n, 2048) float32 dataset; `paths` (its rows' paths, for messages) enables `check`.
  RowReader(hid_t dset, size_t n, const std::vector<std::string>* paths, FeatureMeter* meter,
            const std::string& where)
      : dset_(dset), n_(n), paths_(paths), meter_(meter), where_(where) {}
  const float* row(size_t r) {
    if (r < first_ || r >= first_ + rows_) {
      if (!buf_) buf_.emplace(kChunkRows * kF, meter_);
      first_ = r / kChunkRows * kChunkRows;
      rows_ = std::min<size_t>(kChunkRows, n_ - first_);
      read_block(dset_, first_, rows_, buf_->data(), where_);
      if (paths_)
        for (size_t k = 0; k < rows_; ++k)
          check_finite_row(buf_->data() + k * kF, first_ + k, (*paths_)[first_ + k], where_);
    }
    return buf_->data() + (r - first_) * kF;
  }

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
void verify_features(const OpenCache& o, FeatureMeter* meter, const std::string& where) {
  RowReader rows(o.features.dset.get(), o.c.size(), &o.c.paths, meter, where);
  for (size_t r = 0; r < o.c.size(); r += kChunkRows) rows.row(r);
}

}  // namespace

CacheContents read_cache(const std::string& path) {
  OpenCache o = open_cache(path);
  CacheContents& c = o.c;
  c.features.resize(c.size() * kF);
  if (c.size() > 0)
    h5_check(H5Dread(o.features.dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                     c.features.data()),
             path, "H5Dread", "/features", 0);
  validate_contents(
      c, [&](size_t i) { return &c.features[i * kF]; }, path);
  return std::move(o.c);
}

void write_cache_atomic(const std::string& path, const CacheContents& c) {
  if (c.features.size() != c.paths.size() * kF)
    fail(path, ": dataset '/features': expected ", c.paths.size(), " x ", kF, " values, found ",
         c.features.size());
  h5_silence_errors();
  validate_contents(
      c, [&](size_t i) { return &c.features[i * kF]; }, path);
  write_cache_rows(
      path, c,
      [&](size_t first, size_t rows, float* buf) {
        std::memcpy(buf, &c.features[first * kF], rows * kRowBytes);
      },
      false, nullptr);
}

namespace {
bool skipped_less(const SkippedFile& a, const SkippedFile& b) {
  return a.path != b.path ? a.path < b.path : a.reason < b.reason;
}
bool same_settings(const CacheSettings& a, const CacheSettings& b) {
  return a.weights_sha256 == b.weights_sha256 && a.preprocessing == b.preprocessing;
}
std::string settings_str(const CacheSettings& s) {
  return "weights_sha256 " + s.weights_sha256 + ", preprocessing '" + s.preprocessing + "'";
}
std::string join(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s + "]";
}
}  // namespace

void merge_caches(const std::vector<std::string>& inputs, const std::string& out) {
  merge_caches(inputs, out, nullptr);
}

// Streams: the inputs are opened and validated without their features; each output chunk is
// gathered into the writer's chunk buffer from one staging chunk per input (the rows an input
// contributes are increasing, since inputs and output are sorted by path, so each input chunk is
// read once). Feature memory: (1 + inputs) x 512 KiB, whatever the sizes. An input's feature that
// fails Fletcher-32 or is not finite is reported naming that input (the temporary is removed).
void merge_caches(const std::vector<std::string>& inputs, const std::string& out,
                  size_t* peak_feature_bytes) {
  if (inputs.empty()) fail(out, ": merge needs at least one input cache");
  FeatureMeter meter;
  std::vector<OpenCache> in;
  for (const std::string& p : inputs) {
    in.push_back(open_cache(p));
    validate_contents(in.back().c, nullptr, p);
  }
  CacheContents merged;
  merged.settings = in[0].c.settings;
  merged.class_names = in[0].c.class_names;
  struct Source {
    const std::string* path;
    size_t input, row;
  };
  std::vector<Source> rows;
  std::unordered_map<std::string, size_t> owner;  // path -> input that holds it
  for (size_t k = 0; k < in.size(); ++k) {
    const CacheContents& ck = in[k].c;
    if (!same_settings(ck.settings, in[0].c.settings))
      fail("merge: ", inputs[k], " was made with ", settings_str(ck.settings), " but ", inputs[0],
           " with ", settings_str(in[0].c.settings));
    if (ck.class_names != in[0].c.class_names)
      fail("merge: ", inputs[k], " has class_names ", join(ck.class_names), " but ", inputs[0],
           " has ", join(in[0].c.class_names));
    for (size_t i = 0; i < ck.size(); ++i) {
      auto [it, fresh] = owner.emplace(ck.paths[i], k);
      if (!fresh)
        fail("merge: image '", ck.paths[i], "' is in both ", inputs[it->second], " and ",
             inputs[k]);
      rows.push_back({&ck.paths[i], k, i});
    }
    merged.skipped.insert(merged.skipped.end(), ck.skipped.begin(), ck.skipped.end());
  }
  owner = {};
  std::sort(rows.begin(), rows.end(),
            [](const Source& a, const Source& b) { return *a.path < *b.path; });
  std::sort(merged.skipped.begin(), merged.skipped.end(), skipped_less);
  for (const Source& s : rows) {
    const CacheContents& c = in[s.input].c;
    merged.paths.push_back(c.paths[s.row]);
    merged.sha256.push_back(c.sha256[s.row]);
    merged.labels.push_back(c.labels[s.row]);
    merged.groups.push_back(c.groups[s.row]);
  }
  std::vector<std::unique_ptr<RowReader>> readers;
  for (size_t k = 0; k < in.size(); ++k)
    readers.push_back(std::make_unique<RowReader>(in[k].features.dset.get(), in[k].c.size(),
                                                  &in[k].c.paths, &meter, inputs[k]));
  auto fill = [&](size_t first, size_t count, float* buf) {
    for (size_t r = 0; r < count; ++r) {
      const Source& s = rows[first + r];
      std::memcpy(buf + r * kF, readers[s.input]->row(s.row), kRowBytes);
    }
  };
  write_cache_rows(out, merged, fill, false, &meter);
  if (peak_feature_bytes) *peak_feature_bytes = meter.peak;
}

// ------------------------------------------------------------------------------ the journal
namespace {
constexpr char kPieceMagic[4] = {'B', 'N', 'J', '1'};
constexpr uint32_t kPieceVersion = 1;
constexpr size_t kPieceIoBytes = 64 << 10;  // journal pieces are streamed through 64 KiB buffers

// Piece layout (little-endian): "BNJ1", u32 version, u64 count, u64 feature_size,
// str weights_sha256, str preprocessing, count x {str path, 64 bytes sha256, feature_size x f32},
// then 32 bytes of SHA-256 over everything before. str = u32 length + bytes.

// Writes a piece through a fixed buffer, hashing as it goes; `limit` < the piece size stops the
// output there (the piece:mid_write crash test). Errors throw; the caller removes the temporary.
class PieceWriter {
 public:
  PieceWriter(int fd, const std::string& name, uint64_t limit, FeatureMeter* meter)
      : fd_(fd), name_(name), limit_(limit), buf_(kPieceIoBytes / sizeof(float), meter) {}
  void put(const void* p, size_t n, bool hashed = true) {
    if (hashed) hash_.update(static_cast<const uint8_t*>(p), n);
    const char* c = static_cast<const char*>(p);
    pos_ += n;
    while (n > 0) {
      size_t take = std::min(n, buf_.bytes() - used_);
      std::memcpy(buf_.bytes_data() + used_, c, take);
      used_ += take, c += take, n -= take;
      if (used_ == buf_.bytes()) flush();
    }
  }
  void u32(uint32_t v) { put(&v, 4); }
  void u64(uint64_t v) { put(&v, 8); }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    put(s.data(), s.size());
  }
  uint64_t pos() const { return pos_; }  // offset in the piece of the next byte put
  std::array<uint8_t, 32> digest() { return hash_.digest(); }
  void flush() {
    size_t n = static_cast<size_t>(std::min<uint64_t>(used_, limit_ - std::min(limit_, written_)));
    size_t done = 0;
    while (done < n) {
      ssize_t w = ::write(fd_, buf_.bytes_data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail(name_, ": write failed: ", std::strerror(errno));
      done += static_cast<size_t>(w);
    }
    written_ += used_;
    used_ = 0;
  }

 private:
  int fd_;
  const std::string& name_;
  uint64_t limit_, written_ = 0, pos_ = 0;
  FeatureBuffer buf_;
  size_t used_ = 0;
  Sha256 hash_;
};

// Writes `batch` as the piece `path` so that `path` is either absent or complete: `<path>.tmp`,
// fsync, rename, fsync of the directory, streamed from the batch (never encoded whole in memory).
// Returns the byte offset of each record's feature in the piece. Crash points name where a test
// may kill the writer.
std::vector<uint64_t> write_piece_durable(const std::string& path, const CacheSettings& s,
                                          const std::vector<CacheFeature>& batch,
                                          FeatureMeter* meter) {
  uint64_t total = 4 + 4 + 8 + 8 + 4 + s.weights_sha256.size() + 4 + s.preprocessing.size() + 32;
  for (const CacheFeature& f : batch) total += 4 + f.path.size() + 64 + kRowBytes;
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, ": cannot create: ", std::strerror(errno));
  uint64_t limit = crash_requested("piece:mid_write") ? total / 2 : total;
  std::vector<uint64_t> offsets;
  try {
    PieceWriter w(fd, tmp, limit, meter);
    w.put(kPieceMagic, 4);
    w.u32(kPieceVersion);
    w.u64(batch.size());
    w.u64(kF);
    w.str(s.weights_sha256);
    w.str(s.preprocessing);
    for (const CacheFeature& f : batch) {
      w.str(f.path);
      w.put(f.sha256.data(), 64);
      offsets.push_back(w.pos());
      w.put(f.feature.data(), kRowBytes);
    }
    auto d = w.digest();
    w.put(d.data(), d.size(), false);
    w.flush();
    if (w.pos() != total) fail(tmp, ": internal error: piece size ", w.pos(), " != ", total);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (limit < total) std::raise(SIGKILL);
  int rc = ::fsync(fd);
  int e = errno;
  if (::close(fd) != 0 && rc == 0) rc = -1, e = errno;
  if (rc != 0) {
    ::unlink(tmp.c_str());
    fail(tmp, ": fsync/close failed: ", std::strerror(e));
  }
  crash_point("piece:tmp_written");
  rename_or_fail(tmp, path);
  crash_point("piece:renamed");
  fsync_dir(dir_of(path));
  return offsets;
}

// Sequential reader over a piece's payload (everything before the 32-byte checksum) through a
// fixed buffer, hashing every byte once as it is loaded; get(nullptr, n) skips n bytes.
class PieceReader {
 public:
  PieceReader(int fd, uint64_t payload, FeatureMeter* meter)
      : fd_(fd), unread_(payload), buf_(kPieceIoBytes / sizeof(float), meter) {}
  bool get(void* out, uint64_t n) {
    char* o = static_cast<char*>(out);
    while (n > 0) {
      if (pos_ == len_ && !refill()) return false;
      size_t take = static_cast<size_t>(std::min<uint64_t>(n, len_ - pos_));
      if (o) std::memcpy(o, buf_.bytes_data() + pos_, take), o += take;
      pos_ += take, offset_ += take, n -= take;
    }
    return true;
  }
  bool str(std::string& s) {
    uint32_t len = 0;
    if (!get(&len, 4) || len > left()) return false;
    s.resize(len);
    return get(&s[0], len);
  }
  uint64_t left() const { return unread_ + (len_ - pos_); }
  uint64_t offset() const { return offset_; }  // of the next byte in the piece
  bool io_error() const { return io_error_; }
  std::array<uint8_t, 32> digest() { return hash_.digest(); }

 private:
  bool refill() {
    if (unread_ == 0) return false;
    size_t want = static_cast<size_t>(std::min<uint64_t>(unread_, buf_.bytes()));
    ssize_t n;
    do n = ::read(fd_, buf_.bytes_data(), want);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
      io_error_ = true;
      return false;
    }
    hash_.update(reinterpret_cast<const uint8_t*>(buf_.bytes_data()), static_cast<size_t>(n));
    unread_ -= static_cast<uint64_t>(n);
    pos_ = 0, len_ = static_cast<size_t>(n);
    return true;
  }
  int fd_;
  uint64_t unread_, offset_ = 0;
  FeatureBuffer buf_;
  size_t pos_ = 0, len_ = 0;
  bool io_error_ = false;
  Sha256 hash_;
};

bool hex_to_bin(const std::string& hex, std::array<uint8_t, 32>& out) {
  if (!is_sha256_hex(hex)) return false;
  auto v = [](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
  for (size_t i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(v(hex[2 * i]) << 4 | v(hex[2 * i + 1]));
  return true;
}
std::string bin_to_hex(const std::array<uint8_t, 32>& b) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t x : b) s += kDigits[x >> 4], s += kDigits[x & 15];
  return s;
}

// What replay keeps of a record: its key, hash and where its feature lies in the piece.
struct PieceRecord {
  std::string path;
  std::array<uint8_t, 32> sha256;
  uint64_t offset;  // of the feature's first byte in the piece file
};
struct Piece {
  CacheSettings settings;
  std::vector<PieceRecord> records;
};

// Reads and checks a piece in one streamed pass (the features are hashed and skipped, never held)
// and returns "" on success or why it is unusable. A checksum mismatch is reported in preference
// to the format error it may have caused.
std::string scan_piece(const std::string& path, Piece& out, FeatureMeter* meter) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "unreadable";
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return "unreadable";
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 4 + 4 + 8 + 8 + 32) {
    ::close(fd);
    return "short (" + std::to_string(size) + " bytes)";
  }
  PieceReader r(fd, size - 32, meter);
  auto parse = [&]() -> std::string {
    char magic[4];
    uint32_t version = 0;
    uint64_t count = 0, fsize = 0;
    if (!r.get(magic, 4) || std::memcmp(magic, kPieceMagic, 4) != 0) return "bad magic";
    if (!r.get(&version, 4) || version != kPieceVersion)
      return "unsupported version " + std::to_string(version);
    if (!r.get(&count, 8) || !r.get(&fsize, 8) || fsize != kF)
      return "feature_size " + std::to_string(fsize) + ", expected " + std::to_string(kF);
    if (!r.str(out.settings.weights_sha256) || !r.str(out.settings.preprocessing))
      return "short header";
    if (count > r.left() / kRowBytes) return "count " + std::to_string(count) + " exceeds the payload";
    out.records.resize(count);
    std::string sha(64, '\0');
    for (PieceRecord& rec : out.records) {
      if (!r.str(rec.path) || !r.get(&sha[0], 64)) return "short record";
      if (!hex_to_bin(sha, rec.sha256)) return "sha256 of '" + shorten(rec.path) + "' is not hex";
      rec.offset = r.offset();
      if (!r.get(nullptr, kRowBytes)) return "short record";
    }
    if (r.left() != 0) return "trailing bytes";
    return "";
  };
  std::string why = parse();
  if (!why.empty()) r.get(nullptr, r.left());  // hash the rest: the checksum decides the reason
  std::array<uint8_t, 32> want{};
  bool ok = !r.io_error() && ::pread(fd, want.data(), 32, static_cast<off_t>(size - 32)) == 32;
  ::close(fd);
  if (!ok) return "unreadable";
  if (r.digest() != want) return "checksum mismatch (short or corrupt)";
  return why;
}

// "piece-<16 digits>.bin" -> its sequence number; false for any other name.
bool piece_seq(const std::string& name, uint64_t& seq) {
  if (name.size() != 26 || name.compare(0, 6, "piece-") != 0 || name.compare(22, 4, ".bin") != 0)
    return false;
  seq = 0;
  for (size_t i = 6; i < 22; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    seq = seq * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return true;
}

std::string piece_name(uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "piece-%016llu.bin", static_cast<unsigned long long>(seq));
  return buf;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads single features out of journal pieces by pread at their recorded offsets, keeping the
// few most recently used pieces open (finalize visits rows in path order, not piece order).
class PieceFiles {
 public:
  explicit PieceFiles(const std::vector<std::string>& names) : names_(names) {}
  ~PieceFiles() {
    for (auto& [piece, fd] : open_) ::close(fd);
  }
  PieceFiles(const PieceFiles&) = delete;
  PieceFiles& operator=(const PieceFiles&) = delete;
  void read(uint32_t piece, uint64_t offset, float* out) {
    int fd = get(piece);
    char* o = reinterpret_cast<char*>(out);
    size_t done = 0;
    while (done < kRowBytes) {
      ssize_t n = ::pread(fd, o + done, kRowBytes - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(names_[piece], ": cannot read the feature at byte ", offset, ": ",
                      std::strerror(errno));
      if (n == 0)
        fail(names_[piece], ": journal piece is shorter than when it was checked (feature at byte ",
             offset, ")");
      done += static_cast<size_t>(n);
    }
  }

 private:
  static constexpr size_t kMaxOpen = 16;
  int get(uint32_t piece) {
    for (size_t i = 0; i < open_.size(); ++i)
      if (open_[i].first == piece) {
        std::rotate(open_.begin() + i, open_.begin() + i + 1, open_.end());  // most recent last
        return open_.back().second;
      }
    if (open_.size() == kMaxOpen) {
      ::close(open_.front().second);
      open_.erase(open_.begin());
    }
    int fd = ::open(names_[piece].c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(names_[piece], ": cannot open journal piece: ", std::strerror(errno));
    open_.push_back({piece, fd});
    return fd;
  }
  const std::vector<std::string>& names_;
  std::vector<std::pair<uint32_t, int>> open_;
};
}  // namespace

// -------------------------------------------------------------------------- BottleneckCache
// Only an index is held: per path, its content hash and where its feature lies (a row of the
// consolidated file, or an offset in a journal piece). Features are read back only by finalize,
// one output chunk at a time.
struct BottleneckCache::Impl {
  std::string path, journal_dir;
  CacheSettings settings;
  int lock_fd = -1;
  static constexpr uint32_t kConsolidated = UINT32_MAX, kStale = UINT32_MAX - 1;
  struct Entry {
    std::array<uint8_t, 32> sha256;
    uint32_t piece;  // index into piece_files, or kConsolidated
    uint64_t pos;    // row of the consolidated file, or byte offset of the feature in the piece
  };
  std::unordered_map<std::string, Entry> entries;
  std::vector<std::string> piece_files;  // complete, checked pieces replayed or written
  size_t consolidated_rows = 0;          // N of <path> when it was loaded (or last written)
  uint64_t next_seq = 1;
  size_t pieces = 0;
  FeatureMeter meter;

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
  }

  void put(const std::string& p, const std::array<uint8_t, 32>& sha, uint32_t piece,
           uint64_t pos) {
    entries[p] = Entry{sha, piece, pos};  // a later piece wins
  }

  void take_lock() {
    std::string lock_path = path + ".lock";
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) fail(lock_path, ": cannot create lock file: ", std::strerror(errno));
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        fail(path, " is in use by another extract process (", lock_path, " is locked)");
      fail(lock_path, ": flock failed: ", std::strerror(errno));
    }
  }

  // Consolidated temporaries of killed writers: we hold the lock, so none belongs to a live one.
  void remove_stale_tmps() {
    std::string prefix = base_of(path) + ".tmp.";
    bool removed = false;
    for (const std::string& n : list_dir(dir_of(path)))
      if (n.compare(0, prefix.size(), prefix) == 0 &&
          n.find_first_not_of("0123456789", prefix.size()) == std::string::npos) {
        unlink_if_exists(dir_of(path) + "/" + n);
        removed = true;
      }
    if (removed) fsync_dir(dir_of(path));
  }

  // Deletes pieces in sequence order: a kill half-way leaves the newest pieces, which replay to
  // exactly what the consolidated file already holds.
  void remove_journal() {
    std::vector<std::string> names = list_dir(journal_dir);
    bool first = true;
    for (const std::string& n : names) {
      uint64_t seq;
      if (!piece_seq(n, seq) && !ends_with(n, ".tmp")) continue;
      unlink_if_exists(journal_dir + "/" + n);
      if (first) crash_point("journal:partly_deleted");
      first = false;
    }
    if (file_exists(journal_dir)) {
      if (::rmdir(journal_dir.c_str()) != 0)
        std::cerr << "warning: " << journal_dir << ": not removed (" << std::strerror(errno)
                  << "); it holds files that are not journal pieces\n";
      fsync_dir(dir_of(journal_dir));
    }
  }

  // Validates the whole file as read_cache does (the features streamed in 64-row chunks and
  // dropped) and indexes its rows.
  void load_consolidated() {
    if (!file_exists(path)) return;
    OpenCache o = open_cache(path);  // a corrupt file throws naming it
    validate_contents(o.c, nullptr, path);
    verify_features(o, &meter, path);
    if (!same_settings(o.c.settings, settings))
      fail(path, ": cache was made with ", settings_str(o.c.settings), "; this run uses ",
           settings_str(settings), "; use --force to discard it and extract again");
    consolidated_rows = o.c.size();
    entries.reserve(o.c.size());
    for (size_t i = 0; i < o.c.size(); ++i) {
      Entry e{{}, kConsolidated, i};
      hex_to_bin(o.c.sha256[i], e.sha256);  // validated above
      entries.emplace(std::move(o.c.paths[i]), e);
    }
  }

  void replay_journal() {
    bool removed_tmp = false;
    for (const std::string& n : list_dir(journal_dir)) {
      std::string full = journal_dir + "/" + n;
      if (ends_with(n, ".tmp")) {  // a piece whose writer died before rename: never complete
        unlink_if_exists(full);
        removed_tmp = true;
        continue;
      }
      uint64_t seq;
      if (!piece_seq(n, seq)) continue;  // list_dir sorted: 16-digit names sort by sequence
      next_seq = std::max(next_seq, seq + 1);
      Piece piece;
      std::string why = scan_piece(full, piece, &meter);
      if (!why.empty()) {
        std::cerr << "warning: " << full << ": journal piece ignored (" << why
                  << "); its images will be extracted again\n";
        continue;
      }
      if (!same_settings(piece.settings, settings))
        fail(full, ": journal piece was made with ", settings_str(piece.settings),
             "; this run uses ", settings_str(settings), "; use --force to discard it");
      uint32_t index = static_cast<uint32_t>(piece_files.size());
      piece_files.push_back(full);
      for (const PieceRecord& r : piece.records) put(r.path, r.sha256, index, r.offset);
      ++pieces;
    }
    if (removed_tmp) fsync_dir(journal_dir);
  }
};

BottleneckCache::BottleneckCache(const std::string& path, const CacheSettings& settings, bool force)
    : impl_(std::make_unique<Impl>()) {
  h5_silence_errors();
  Impl& m = *impl_;
  m.path = path;
  m.journal_dir = path + ".journal";
  m.settings = settings;
  m.take_lock();
  m.remove_stale_tmps();
  if (force) {  // start over: the old file and journal go now, so a rerun resumes this run
    m.remove_journal();
    if (file_exists(path)) {
      unlink_if_exists(path);
      fsync_dir(dir_of(path));
    }
    return;
  }
  m.load_consolidated();
  m.replay_journal();
}

BottleneckCache::~BottleneckCache() = default;

bool BottleneckCache::has(const std::string& path, const std::string& sha256) const {
  auto it = impl_->entries.find(path);
  std::array<uint8_t, 32> sha;
  return it != impl_->entries.end() && hex_to_bin(sha256, sha) && it->second.sha256 == sha;
}
size_t BottleneckCache::cached() const { return impl_->entries.size(); }
size_t BottleneckCache::journal_pieces() const { return impl_->pieces; }
size_t BottleneckCache::peak_feature_bytes() const { return impl_->meter.peak; }

void BottleneckCache::append(const std::vector<CacheFeature>& batch) {
  Impl& m = *impl_;
  if (batch.empty()) return;
  for (const CacheFeature& f : batch) {
    ENGINE_CHECK(!f.path.empty() && f.path.find('\0') == std::string::npos, m.path,
                 ": append: empty path or NUL byte in '", f.path, "'");
    ENGINE_CHECK(is_sha256_hex(f.sha256), m.path, ": append: '", f.path,
                 "': sha256 must be 64 lower-case hex characters, found '", f.sha256, "'");
    ENGINE_CHECK(f.feature.size() == kF, m.path, ": append: '", f.path, "': expected ", kF,
                 " values, found ", f.feature.size());
    for (float v : f.feature)
      if (!std::isfinite(v)) fail(m.path, ": append: '", f.path, "': non-finite feature value ", v);
  }
  if (!file_exists(m.journal_dir)) {
    if (::mkdir(m.journal_dir.c_str(), 0755) != 0 && errno != EEXIST)
      fail(m.journal_dir, ": cannot create journal directory: ", std::strerror(errno));
    fsync_dir(dir_of(m.journal_dir));
  }
  std::string piece = m.journal_dir + "/" + piece_name(m.next_seq);
  std::vector<uint64_t> offsets = write_piece_durable(piece, m.settings, batch, &m.meter);
  ++m.next_seq;
  ++m.pieces;
  uint32_t index = static_cast<uint32_t>(m.piece_files.size());
  m.piece_files.push_back(piece);
  for (size_t k = 0; k < batch.size(); ++k) {
    std::array<uint8_t, 32> sha;
    hex_to_bin(batch[k].sha256, sha);  // checked above
    m.put(batch[k].path, sha, index, offsets[k]);
  }
}

void BottleneckCache::finalize(const std::vector<ImageMeta>& current,
                               const std::vector<std::string>& class_names,
                               const std::vector<SkippedFile>& skipped) {
  Impl& m = *impl_;
  std::vector<const ImageMeta*> order;
  for (const ImageMeta& im : current) order.push_back(&im);
  std::sort(order.begin(), order.end(),
            [](const ImageMeta* a, const ImageMeta* b) { return a->path < b->path; });
  CacheContents c;  // everything but the features, which are read back chunk by chunk
  c.settings = m.settings;
  c.class_names = class_names;
  std::vector<Impl::Entry*> where;  // entries is not modified until the file is written
  bool any_consolidated = false;
  for (size_t i = 0; i < order.size(); ++i) {
    const ImageMeta& im = *order[i];
    if (i > 0 && order[i - 1]->path == im.path)
      fail(m.path, ": finalize: image '", im.path, "' is listed twice");
    auto it = m.entries.find(im.path);
    if (it == m.entries.end())
      fail(m.path, ": finalize: image '", im.path,
           "' has no cached feature (extract it or list it as skipped)");
    c.paths.push_back(im.path);
    c.sha256.push_back(bin_to_hex(it->second.sha256));
    c.labels.push_back(im.label);
    c.groups.push_back(im.group);
    where.push_back(&it->second);
    any_consolidated |= it->second.piece == Impl::kConsolidated;
  }
  c.skipped = skipped;
  std::sort(c.skipped.begin(), c.skipped.end(), skipped_less);
  {
    // Rows of the old consolidated file come through a RowReader (asked in increasing row order,
    // since both files are sorted by path), rows of journal pieces by pread at their offsets.
    // Only /features of the old file is opened: it was validated whole when it was loaded.
    std::optional<H5File> old;
    std::optional<Dataset> old_features;
    std::optional<RowReader> old_rows;
    if (any_consolidated) {
      old.emplace(H5File::open_read(m.path));
      old_features.emplace(
          open_dataset(old->id(), "/features", H5T_FLOAT, 4, 2, "float32", m.path));
      expect_dims(*old_features, {m.consolidated_rows, kF}, "/features", m.path);
      old_rows.emplace(old_features->dset.get(), m.consolidated_rows, nullptr, &m.meter, m.path);
    }
    PieceFiles pieces(m.piece_files);
    auto fill = [&](size_t first, size_t rows, float* buf) {
      for (size_t r = 0; r < rows; ++r) {
        const Impl::Entry& e = *where[first + r];
        if (e.piece == Impl::kConsolidated)
          std::memcpy(buf + r * kF, old_rows->row(e.pos), kRowBytes);
        else
          pieces.read(e.piece, e.pos, buf + r * kF);
      }
    };
    write_cache_rows(m.path, c, fill, true, &m.meter);
  }
  // The new file is in place: the index now points at its rows, in place (no second index), and
  // paths not in `current` are dropped (their features went with the old file and journal).
  for (auto& [p, e] : m.entries) e.piece = Impl::kStale;
  for (size_t i = 0; i < where.size(); ++i) where[i]->piece = Impl::kConsolidated, where[i]->pos = i;
  for (auto it = m.entries.begin(); it != m.entries.end();)
    it = it->second.piece == Impl::kStale ? m.entries.erase(it) : std::next(it);
  m.piece_files.clear();
  m.consolidated_rows = c.size();
  m.remove_journal();
}

}  // namespace engine
