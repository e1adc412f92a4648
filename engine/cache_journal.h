// engine/cache_journal.h: the bottleneck cache's journal: one binary piece per appended batch in
// `<cache>.h5.journal/`, each written durably (tmp + fsync + rename + directory fsync) and
// checksummed with SHA-256, so a piece is either absent or complete; replay scans pieces in one
// streamed pass and finalize reads single features back by offset. Piece layout and crash points:
// weights/CACHE.md. Internal to the cache (engine/bottleneck_cache.cpp uses it).
// Tests: tests/test_cache_crash.cpp, tests/test_cache_open.cpp.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/cache_file.h"

namespace engine::cache_detail {

// Writes `batch` as the piece `path` so that `path` is either absent or complete: `<path>.tmp`,
// fsync, rename, fsync of the directory, streamed from the batch (never encoded whole in memory).
// Returns the byte offset of each record's feature in the piece. Crash points name where a test
// may kill the writer.
std::vector<uint64_t> write_piece_durable(const std::string& path, const CacheSettings& s,
                                          const std::vector<CacheFeature>& batch,
                                          FeatureMeter* meter);

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
std::string scan_piece(const std::string& path, Piece& out, FeatureMeter* meter);

// "piece-<16 digits>.bin" <-> its sequence number (false for any other name).
bool piece_seq(const std::string& name, uint64_t& seq);
std::string piece_name(uint64_t seq);
bool ends_with(const std::string& s, const std::string& suffix);

// Content hashes: 64 lower-case hex characters <-> 32 bytes (false for anything but such hex).
bool hex_to_bin(const std::string& hex, std::array<uint8_t, 32>& out);
std::string bin_to_hex(const std::array<uint8_t, 32>& b);

// Reads single features out of journal pieces by pread at their recorded offsets, keeping the
// few most recently used pieces open (finalize visits rows in path order, not piece order).
class PieceFiles {
 public:
  explicit PieceFiles(const std::vector<std::string>& names) : names_(names) {}
  ~PieceFiles();
  PieceFiles(const PieceFiles&) = delete;
  PieceFiles& operator=(const PieceFiles&) = delete;
  void read(uint32_t piece, uint64_t offset, float* out);  // one feature (kRowBytes)

 private:
  static constexpr size_t kMaxOpen = 16;
  int get(uint32_t piece);
  const std::vector<std::string>& names_;
  std::vector<std::pair<uint32_t, int>> open_;
};

}  // namespace engine::cache_detail
