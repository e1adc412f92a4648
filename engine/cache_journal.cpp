// engine/cache_journal.cpp: journal pieces of the bottleneck cache (declared in
// engine/cache_journal.h; layout in weights/CACHE.md): the streamed, checksummed piece writer and
// reader, piece names, and random access to features by offset.
#include "engine/cache_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/sha256.h"

// Journal pieces store raw float32 and integers in host order; the format says little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal pieces assume little-endian");

namespace engine::cache_detail {

namespace {
constexpr char kPieceMagic[4] = {'B', 'N', 'J', '1'};
// Version 2 added the precision string; version 1 pieces (written before it, by the CPU only)
// are read as fp32. Engines older than version 2 ignore a version 2 piece with a warning and
// extract its images again, so they never mix its features into an fp32 cache. Version 3 adds the
// int8 calibration string; it is written only by int8 runs (other pieces stay version 2, readable
// as before), and version 2 engines ignore it the same way.
constexpr uint32_t kPieceVersion = 2, kPieceVersionCalibrated = 3;
constexpr size_t kPieceIoBytes = 64 << 10;  // journal pieces are streamed through 64 KiB buffers

// Piece layout (little-endian): "BNJ1", u32 version, u64 count, u64 feature_size,
// str weights_sha256, str preprocessing, str precision (version >= 2), str calibration (version 3
// only), count x {str path,
// 64 bytes sha256, feature_size x f32}, then 32 bytes of SHA-256 over everything before.
// str = u32 length + bytes.

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
}  // namespace

std::vector<uint64_t> write_piece_durable(const std::string& path, const CacheSettings& s,
                                          const std::vector<CacheFeature>& batch,
                                          FeatureMeter* meter) {
  const bool calibrated = !s.calibration.empty();
  uint64_t total = 4 + 4 + 8 + 8 + 4 + s.weights_sha256.size() + 4 + s.preprocessing.size() + 4 +
                   s.precision.size() + (calibrated ? 4 + s.calibration.size() : 0) + 32;
  for (const CacheFeature& f : batch) total += 4 + f.path.size() + 64 + kRowBytes;
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, ": cannot create: ", std::strerror(errno));
  uint64_t limit = crash_requested("piece:mid_write") ? total / 2 : total;
  std::vector<uint64_t> offsets;
  try {
    PieceWriter w(fd, tmp, limit, meter);
    w.put(kPieceMagic, 4);
    w.u32(calibrated ? kPieceVersionCalibrated : kPieceVersion);
    w.u64(batch.size());
    w.u64(kF);
    w.str(s.weights_sha256);
    w.str(s.preprocessing);
    w.str(s.precision);
    if (calibrated) w.str(s.calibration);
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
  fsync_close_or_unlink(fd, tmp);
  crash_point("piece:tmp_written");
  rename_or_fail(tmp, path);
  crash_point("piece:renamed");
  fsync_dir(dir_of(path));
  return offsets;
}

bool hex_to_bin(const std::string& hex, std::array<uint8_t, 32>& out) {
  if (!is_sha256_hex(hex)) return false;
  auto v = [](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
  for (size_t i = 0; i < 32; ++i)
    out[i] = static_cast<uint8_t>(v(hex[2 * i]) << 4 | v(hex[2 * i + 1]));
  return true;
}
std::string bin_to_hex(const std::array<uint8_t, 32>& b) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t x : b) s += kDigits[x >> 4], s += kDigits[x & 15];
  return s;
}

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
    if (!r.get(&version, 4) || version < 1 || version > kPieceVersionCalibrated)
      return "unsupported version " + std::to_string(version);
    if (!r.get(&count, 8) || !r.get(&fsize, 8) || fsize != kF)
      return "feature_size " + std::to_string(fsize) + ", expected " + std::to_string(kF);
    if (!r.str(out.settings.weights_sha256) || !r.str(out.settings.preprocessing))
      return "short header";
    out.settings.precision = "fp32";  // version 1: only the CPU wrote pieces, in fp32
    if (version >= 2 && !r.str(out.settings.precision)) return "short header";
    out.settings.calibration.clear();
    if (version >= 3 && !r.str(out.settings.calibration)) return "short header";
    if (count > r.left() / kRowBytes)
      return "count " + std::to_string(count) + " exceeds the payload";
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

PieceFiles::~PieceFiles() {
  for (auto& [piece, fd] : open_) ::close(fd);
}

void PieceFiles::read(uint32_t piece, uint64_t offset, float* out) {
  int fd = get(piece);
  char* o = reinterpret_cast<char*>(out);
  size_t done = 0;
  while (done < kRowBytes) {
    ssize_t n = ::pread(fd, o + done, kRowBytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      fail(names_[piece], ": cannot read the feature at byte ", offset, ": ", std::strerror(errno));
    if (n == 0)
      fail(names_[piece], ": journal piece is shorter than when it was checked (feature at byte ",
           offset, ")");
    done += static_cast<size_t>(n);
  }
}

int PieceFiles::get(uint32_t piece) {
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

}  // namespace engine::cache_detail
