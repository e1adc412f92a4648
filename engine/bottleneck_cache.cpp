// engine/bottleneck_cache.cpp: the crash-safe bottleneck cache declared in bottleneck_cache.h:
// SHA-256 (FIPS 180-4), durable file primitives (tmp + fsync + rename + directory fsync), the
// consolidated HDF5 writer and validating reader, the binary journal pieces, BottleneckCache
// (lock, load, replay, append, finalize) and merge_caches. Layout: weights/CACHE.md.
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
#include <iostream>
#include <unordered_map>

#include "engine/error.h"
#include "engine/hdf5_io.h"

// Journal pieces store raw float32 and integers in host order; the format says little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal pieces assume little-endian");

namespace engine {

// ------------------------------------------------------------------------------------ SHA-256
namespace {
constexpr uint32_t kSha256K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// Streaming SHA-256: update() any number of times, then hex() once.
class Sha256 {
 public:
  void update(const uint8_t* p, size_t n) {
    total_ += n;
    if (used_ > 0) {
      size_t take = std::min(n, size_t{64} - used_);
      std::memcpy(buf_ + used_, p, take);
      used_ += take, p += take, n -= take;
      if (used_ < 64) return;
      compress(buf_);
      used_ = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(p);
    std::memcpy(buf_, p, n);
    used_ = n;
  }
  std::array<uint8_t, 32> digest() {
    uint64_t bits = total_ * 8;
    uint8_t pad[72] = {0x80};
    size_t pad_len = (used_ < 56 ? 56 - used_ : 120 - used_);
    for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(pad, pad_len + 8);
    std::array<uint8_t, 32> out{};
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(h_[i] >> (24 - 8 * j));
    return out;
  }
  std::string hex() {
    static const char* kDigits = "0123456789abcdef";
    std::string s;
    for (uint8_t b : digest()) s += kDigits[b >> 4], s += kDigits[b & 15];
    return s;
  }

 private:
  void compress(const uint8_t* p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 |
             uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kSha256K[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64] = {};
  size_t used_ = 0;
  uint64_t total_ = 0;
};
}  // namespace

std::string sha256_hex(const uint8_t* data, size_t size) {
  Sha256 s;
  s.update(data, size);
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open for hashing: ", std::strerror(errno));
  std::vector<uint8_t> buf(1 << 20);  // 1 MiB reads: images are streamed, never held whole
  Sha256 s;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail(path, ": read error while hashing: ", std::strerror(e));
    }
    if (n == 0) break;
    s.update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return s.hex();
}

// ------------------------------------------------------------------- durable file primitives
namespace {

// Test-only: ENGINE_CACHE_CRASH_AT=<point> makes the process SIGKILL itself there, so the crash
// tests can stop a run exactly where a kill -9 or power cut could (points listed in CACHE.md).
// "<point>#<n>" crashes at the n-th time the point is reached (tools/extract's kill tests).
bool crash_requested(const char* point) {
  const char* want = std::getenv("ENGINE_CACHE_CRASH_AT");
  if (!want) return false;
  const char* hash = std::strchr(want, '#');
  const size_t len = hash ? static_cast<size_t>(hash - want) : std::strlen(want);
  if (std::strlen(point) != len || std::strncmp(want, point, len) != 0) return false;
  static std::atomic<long> hits{0};
  return ++hits >= (hash ? std::atol(hash + 1) : 1);
}
void crash_point(const char* point) {
  if (crash_requested(point)) std::raise(SIGKILL);
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
std::string base_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A rename or unlink is only durable once the directory holding the entry is fsync'ed.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, ": cannot open directory to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  // EINVAL: the filesystem cannot fsync directories (its renames are then as durable as it gets).
  if (rc != 0 && e != EINVAL) fail(dir, ": fsync of directory failed: ", std::strerror(e));
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) fail(path, ": fsync failed: ", std::strerror(e));
}

void rename_or_fail(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail(from, ": cannot rename to ", to, ": ", std::strerror(errno));
}

void unlink_if_exists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    fail(path, ": cannot delete: ", std::strerror(errno));
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return names;
    fail(dir, ": cannot list directory: ", std::strerror(errno));
  }
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// Writes `bytes` to `path` so that `path` is either absent or complete: `<path>.tmp`, fsync,
// rename, fsync of the directory. Crash points name where a test may kill the writer.
void write_file_durable(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, ": cannot create: ", std::strerror(errno));
  size_t limit = crash_requested("piece:mid_write") ? bytes.size() / 2 : bytes.size();
  size_t done = 0;
  while (done < limit) {
    ssize_t n = ::write(fd, bytes.data() + done, limit - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(tmp, ": write failed: ", std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (limit < bytes.size()) std::raise(SIGKILL);
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
}

// -------------------------------------------------------------------- consolidated HDF5 file
using RowFn = std::function<const float*(size_t row)>;
constexpr hsize_t kChunkRows = 64;  // 512 KiB chunks: fit h5py's default 1 MiB chunk cache
constexpr size_t kF = static_cast<size_t>(kCacheFeatureSize);

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

// The invariants every consolidated cache satisfies, checked before writing and after reading.
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
    const float* f = row(i);
    for (size_t j = 0; j < kF; ++j)
      if (!std::isfinite(f[j]))
        fail(where, ": dataset '/features': non-finite value ", f[j], " at row ", i, " ('",
             shorten(c.paths[i]), "'), column ", j);
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
void write_objects(hid_t f, const CacheContents& c, const RowFn& row, const std::string& w) {
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
      std::vector<float> buf(kChunkRows * kF);
      for (hsize_t r0 = 0; r0 < n; r0 += kChunkRows) {
        hsize_t rows = std::min(kChunkRows, n - r0);
        for (hsize_t r = 0; r < rows; ++r)
          std::memcpy(&buf[r * kF], row(r0 + r), kF * sizeof(float));
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
void write_hdf5(const std::string& file_path, const CacheContents& c, const RowFn& row) {
  hid_t f = H5Fcreate(file_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) fail(file_path, ": H5Fcreate failed", h5_reason());
  try {
    write_objects(f, c, row, file_path);
  } catch (...) {
    H5Fclose(f);
    throw;
  }
  if (H5Fclose(f) < 0) fail(file_path, ": H5Fclose failed", h5_reason());
}

// Validates, writes `<path>.tmp.<pid>`, fsyncs it, renames it over `path`, fsyncs the directory.
void write_cache_rows(const std::string& path, const CacheContents& c, const RowFn& row) {
  h5_silence_errors();
  validate_contents(c, row, path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write_hdf5(tmp, c, row);
    fsync_path(tmp);
  } catch (...) {
    ::unlink(tmp.c_str());  // never leave a half-written temporary behind an error
    throw;
  }
  crash_point("consolidated:tmp_written");
  rename_or_fail(tmp, path);
  fsync_dir(dir_of(path));
  crash_point("consolidated:renamed");
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

}  // namespace

CacheContents read_cache(const std::string& path) {
  H5File file = H5File::open_read(path);
  hid_t f = file.id();
  int64_t version = h5_read_int_attr(f, "format_version", path);
  if (version != kCacheFormatVersion)
    fail(path, ": attribute 'format_version': expected ", kCacheFormatVersion, ", found ", version,
         " (written by another engine version?)");
  int64_t feature_size = h5_read_int_attr(f, "feature_size", path);
  if (feature_size != kCacheFeatureSize)
    fail(path, ": attribute 'feature_size': expected ", kCacheFeatureSize, ", found ",
         feature_size);
  CacheContents c;
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
  {
    Dataset d = open_dataset(f, "/features", H5T_FLOAT, 4, 2, "float32", path);
    expect_dims(d, {static_cast<hsize_t>(n), kF}, "/features", path);
    c.features.resize(static_cast<size_t>(n) * kF);
    if (n > 0)
      h5_check(
          H5Dread(d.dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.features.data()),
          path, "H5Dread", "/features", 0);
  }
  std::vector<std::string> sk_paths = read_strings(f, "/skipped/paths", -1, path);
  std::vector<std::string> sk_reasons =
      read_strings(f, "/skipped/reasons", static_cast<int64_t>(sk_paths.size()), path);
  for (size_t i = 0; i < sk_paths.size(); ++i) c.skipped.push_back({sk_paths[i], sk_reasons[i]});
  validate_contents(
      c, [&](size_t i) { return &c.features[i * kF]; }, path);
  return c;
}

void write_cache_atomic(const std::string& path, const CacheContents& c) {
  if (c.features.size() != c.paths.size() * kF)
    fail(path, ": dataset '/features': expected ", c.paths.size(), " x ", kF, " values, found ",
         c.features.size());
  write_cache_rows(path, c, [&](size_t i) { return &c.features[i * kF]; });
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
  if (inputs.empty()) fail(out, ": merge needs at least one input cache");
  std::vector<CacheContents> in;
  for (const std::string& p : inputs) in.push_back(read_cache(p));
  CacheContents merged;
  merged.settings = in[0].settings;
  merged.class_names = in[0].class_names;
  struct Source {
    const std::string* path;
    size_t input, row;
  };
  std::vector<Source> rows;
  std::unordered_map<std::string, size_t> owner;  // path -> input that holds it
  for (size_t k = 0; k < in.size(); ++k) {
    if (!same_settings(in[k].settings, in[0].settings))
      fail("merge: ", inputs[k], " was made with ", settings_str(in[k].settings), " but ",
           inputs[0], " with ", settings_str(in[0].settings));
    if (in[k].class_names != in[0].class_names)
      fail("merge: ", inputs[k], " has class_names ", join(in[k].class_names), " but ", inputs[0],
           " has ", join(in[0].class_names));
    for (size_t i = 0; i < in[k].size(); ++i) {
      auto [it, fresh] = owner.emplace(in[k].paths[i], k);
      if (!fresh)
        fail("merge: image '", in[k].paths[i], "' is in both ", inputs[it->second], " and ",
             inputs[k]);
      rows.push_back({&in[k].paths[i], k, i});
    }
    merged.skipped.insert(merged.skipped.end(), in[k].skipped.begin(), in[k].skipped.end());
  }
  std::sort(rows.begin(), rows.end(),
            [](const Source& a, const Source& b) { return *a.path < *b.path; });
  std::sort(merged.skipped.begin(), merged.skipped.end(), skipped_less);
  for (const Source& s : rows) {
    const CacheContents& c = in[s.input];
    merged.paths.push_back(c.paths[s.row]);
    merged.sha256.push_back(c.sha256[s.row]);
    merged.labels.push_back(c.labels[s.row]);
    merged.groups.push_back(c.groups[s.row]);
  }
  // Features are gathered row by row from the inputs, never copied into one more big array.
  write_cache_rows(out, merged,
                   [&](size_t i) { return &in[rows[i].input].features[rows[i].row * kF]; });
}

// ------------------------------------------------------------------------------ the journal
namespace {
constexpr char kPieceMagic[4] = {'B', 'N', 'J', '1'};
constexpr uint32_t kPieceVersion = 1;

void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& b, const std::string& s) {
  put_u32(b, static_cast<uint32_t>(s.size()));
  b += s;
}

// Bounds-checked cursor over a piece; every get returns false when the bytes run out.
struct Reader {
  const char* p;
  size_t left;
  bool get(void* out, size_t n) {
    if (n > left) return false;
    std::memcpy(out, p, n);
    p += n, left -= n;
    return true;
  }
  bool str(std::string& s) {
    uint32_t len = 0;
    if (!get(&len, 4) || len > left) return false;
    s.assign(p, len);
    p += len, left -= len;
    return true;
  }
};

// Layout (little-endian): "BNJ1", u32 version, u64 count, u64 feature_size, str weights_sha256,
// str preprocessing, count x {str path, 64 bytes sha256, feature_size x f32}, then 32 bytes of
// SHA-256 over everything before. str = u32 length + bytes.
std::string encode_piece(const CacheSettings& s, const std::vector<CacheFeature>& batch) {
  std::string b;
  b.reserve(64 + batch.size() * (kF * 4 + 128));
  b.append(kPieceMagic, 4);
  put_u32(b, kPieceVersion);
  put_u64(b, batch.size());
  put_u64(b, kF);
  put_str(b, s.weights_sha256);
  put_str(b, s.preprocessing);
  for (const CacheFeature& f : batch) {
    put_str(b, f.path);
    b += f.sha256;
    b.append(reinterpret_cast<const char*>(f.feature.data()), kF * sizeof(float));
  }
  Sha256 h;
  h.update(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  auto d = h.digest();
  b.append(reinterpret_cast<const char*>(d.data()), d.size());
  return b;
}

struct Piece {
  CacheSettings settings;
  std::vector<CacheFeature> features;
};

// Decodes a piece; returns "" on success or why it is unusable.
std::string decode_piece(const std::string& bytes, Piece& out) {
  if (bytes.size() < 4 + 4 + 8 + 8 + 32)
    return "short (" + std::to_string(bytes.size()) + " bytes)";
  Sha256 h;
  h.update(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size() - 32);
  auto d = h.digest();
  if (std::memcmp(d.data(), bytes.data() + bytes.size() - 32, 32) != 0)
    return "checksum mismatch (short or corrupt)";
  Reader r{bytes.data(), bytes.size() - 32};
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
  if (count > r.left / (kF * 4)) return "count " + std::to_string(count) + " exceeds the payload";
  out.features.resize(count);
  for (CacheFeature& f : out.features) {
    f.sha256.resize(64);
    f.feature.resize(kF);
    if (!r.str(f.path) || !r.get(&f.sha256[0], 64) || !r.get(f.feature.data(), kF * 4))
      return "short record";
  }
  if (r.left != 0) return "trailing bytes";
  return "";
}

bool read_whole(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  bool ok = ::fstat(fd, &st) == 0;
  out.assign(ok ? static_cast<size_t>(st.st_size) : 0, '\0');
  size_t done = 0;
  while (ok && done < out.size()) {
    ssize_t n = ::read(fd, &out[done], out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      ok = false;
    else
      done += static_cast<size_t>(n);
  }
  ::close(fd);
  return ok;
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

// Feature rows in fixed blocks that never move: growing the cache never copies (or transiently
// doubles) the features, and the consolidated file's array is adopted whole without a copy.
class FeatureStore {
 public:
  struct Slot {
    uint32_t block = 0, row = 0;
  };
  Slot adopt_rows(std::vector<float>&& rows) {
    blocks_.push_back(std::move(rows));
    tail_free_ = 0;
    return {static_cast<uint32_t>(blocks_.size() - 1), 0};
  }
  Slot add(const float* f) {
    if (tail_free_ == 0) {
      blocks_.emplace_back(kBlockRows * kF);
      tail_free_ = kBlockRows;
    }
    Slot s{static_cast<uint32_t>(blocks_.size() - 1),
           static_cast<uint32_t>(kBlockRows - tail_free_)};
    --tail_free_;
    std::memcpy(row(s), f, kF * sizeof(float));
    return s;
  }
  float* row(Slot s) { return &blocks_[s.block][static_cast<size_t>(s.row) * kF]; }

 private:
  static constexpr size_t kBlockRows = 256;  // 2 MiB blocks
  std::vector<std::vector<float>> blocks_;
  size_t tail_free_ = 0;
};
}  // namespace

// -------------------------------------------------------------------------- BottleneckCache
struct BottleneckCache::Impl {
  std::string path, journal_dir;
  CacheSettings settings;
  int lock_fd = -1;
  struct Entry {
    std::string sha256;
    FeatureStore::Slot slot;
  };
  std::unordered_map<std::string, Entry> entries;
  FeatureStore store;
  uint64_t next_seq = 1;
  size_t pieces = 0;

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
  }

  void put(const CacheFeature& f) {
    auto it = entries.find(f.path);
    if (it != entries.end()) {  // a later piece wins; same size, so overwrite in place
      it->second.sha256 = f.sha256;
      std::memcpy(store.row(it->second.slot), f.feature.data(), kF * sizeof(float));
    } else {
      entries.emplace(f.path, Entry{f.sha256, store.add(f.feature.data())});
    }
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

  void load_consolidated() {
    if (!file_exists(path)) return;
    CacheContents c = read_cache(path);  // a corrupt file throws naming it
    if (!same_settings(c.settings, settings))
      fail(path, ": cache was made with ", settings_str(c.settings), "; this run uses ",
           settings_str(settings), "; use --force to discard it and extract again");
    FeatureStore::Slot base = store.adopt_rows(std::move(c.features));
    for (size_t i = 0; i < c.size(); ++i)
      entries.emplace(c.paths[i], Entry{std::move(c.sha256[i]),
                                        FeatureStore::Slot{base.block, static_cast<uint32_t>(i)}});
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
      std::string bytes;
      Piece piece;
      std::string why = read_whole(full, bytes) ? decode_piece(bytes, piece) : "unreadable";
      if (!why.empty()) {
        std::cerr << "warning: " << full << ": journal piece ignored (" << why
                  << "); its images will be extracted again\n";
        continue;
      }
      if (!same_settings(piece.settings, settings))
        fail(full, ": journal piece was made with ", settings_str(piece.settings),
             "; this run uses ", settings_str(settings), "; use --force to discard it");
      for (const CacheFeature& f : piece.features) put(f);
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
  return it != impl_->entries.end() && it->second.sha256 == sha256;
}
size_t BottleneckCache::cached() const { return impl_->entries.size(); }
size_t BottleneckCache::journal_pieces() const { return impl_->pieces; }

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
  write_file_durable(m.journal_dir + "/" + piece_name(m.next_seq), encode_piece(m.settings, batch));
  ++m.next_seq;
  ++m.pieces;
  for (const CacheFeature& f : batch) m.put(f);
}

void BottleneckCache::finalize(const std::vector<ImageMeta>& current,
                               const std::vector<std::string>& class_names,
                               const std::vector<SkippedFile>& skipped) {
  Impl& m = *impl_;
  std::vector<const ImageMeta*> order;
  for (const ImageMeta& im : current) order.push_back(&im);
  std::sort(order.begin(), order.end(),
            [](const ImageMeta* a, const ImageMeta* b) { return a->path < b->path; });
  CacheContents c;  // everything but the features, which stay where they are in the store
  c.settings = m.settings;
  c.class_names = class_names;
  std::vector<FeatureStore::Slot> slots;
  for (size_t i = 0; i < order.size(); ++i) {
    const ImageMeta& im = *order[i];
    if (i > 0 && order[i - 1]->path == im.path)
      fail(m.path, ": finalize: image '", im.path, "' is listed twice");
    auto it = m.entries.find(im.path);
    if (it == m.entries.end())
      fail(m.path, ": finalize: image '", im.path,
           "' has no cached feature (extract it or list it as skipped)");
    c.paths.push_back(im.path);
    c.sha256.push_back(it->second.sha256);
    c.labels.push_back(im.label);
    c.groups.push_back(im.group);
    slots.push_back(it->second.slot);
  }
  c.skipped = skipped;
  std::sort(c.skipped.begin(), c.skipped.end(), skipped_less);
  write_cache_rows(m.path, c, [&](size_t i) { return m.store.row(slots[i]); });
  m.remove_journal();
}

}  // namespace engine
