// engine/bottleneck_cache.cpp: BottleneckCache (declared in bottleneck_cache.h): the lock, loading
// the consolidated file, replaying the journal, append and finalize. Only an index is held (path
// -> hash, row or piece offset), never the features; finalize streams them in 64-row chunks
// (weights/CACHE.md, "Memory"). The parts it is built from: engine/durable_file.h (tmp + fsync +
// rename + directory fsync, crash points), engine/cache_file.h (the consolidated HDF5 file's
// writer and validating reader), engine/cache_journal.h (journal pieces); merge_caches is in
// engine/cache_merge.cpp. Tests: tests/test_cache_*.cpp (crash tests kill a child at the points
// named by crash_point()).
#include "engine/bottleneck_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "engine/cache_file.h"
#include "engine/cache_journal.h"
#include "engine/durable_file.h"
#include "engine/error.h"

namespace engine {

using namespace cache_detail;

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
  // Guards the index (entries, piece_files, pieces): has() is asked by extract's decode workers
  // while append() runs on its writer thread. The piece itself is written outside the lock.
  mutable std::mutex mu;

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
  }

  void put(const std::string& p, const std::array<uint8_t, 32>& sha, uint32_t piece, uint64_t pos) {
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

std::optional<CacheSettings> peek_cache_settings(const std::string& path) {
  if (file_exists(path)) {
    OpenCache o = open_cache(path);  // a corrupt file throws naming it, as opening the cache would
    return o.c.settings;
  }
  // Pieces in sequence order (list_dir sorts); torn or corrupt ones are skipped, as replay does.
  const std::string journal_dir = path + ".journal";
  for (const std::string& n : list_dir(journal_dir)) {
    uint64_t seq;
    if (!piece_seq(n, seq)) continue;
    Piece piece;
    if (scan_piece(journal_dir + "/" + n, piece, nullptr).empty()) return piece.settings;
  }
  return std::nullopt;
}

BottleneckCache::BottleneckCache(const std::string& path, const CacheSettings& settings, bool force)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.journal_dir = path + ".journal";
  m.settings = settings;
  const std::string bad = settings_problem(settings);
  if (!bad.empty()) fail(path, ": ", bad);
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
  std::array<uint8_t, 32> sha;
  if (!hex_to_bin(sha256, sha)) return false;
  std::lock_guard<std::mutex> l(impl_->mu);
  auto it = impl_->entries.find(path);
  return it != impl_->entries.end() && it->second.sha256 == sha;
}
size_t BottleneckCache::cached() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->entries.size();
}
size_t BottleneckCache::journal_pieces() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->pieces;
}
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
  std::lock_guard<std::mutex> l(m.mu);
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
  std::lock_guard<std::mutex> l(m.mu);
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
    std::optional<H5Dataset> old_features;
    std::optional<RowReader> old_rows;
    if (any_consolidated) {
      old.emplace(H5File::open_read(m.path));
      old_features.emplace(open_features(*old, m.consolidated_rows));
      old_rows.emplace(old_features->id.get(), m.consolidated_rows, nullptr, &m.meter, m.path);
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
  for (size_t i = 0; i < where.size(); ++i)
    where[i]->piece = Impl::kConsolidated, where[i]->pos = i;
  for (auto it = m.entries.begin(); it != m.entries.end();)
    it = it->second.piece == Impl::kStale ? m.entries.erase(it) : std::next(it);
  m.piece_files.clear();
  m.consolidated_rows = c.size();
  m.remove_journal();
}

}  // namespace engine
