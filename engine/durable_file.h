// engine/durable_file.h: files that are either the old version or the new one after a crash or
// power cut, never a mix. The recipe (weights/CACHE.md, "Crash safety"): write a temporary next to
// the target, fsync it, rename it over the target, fsync the directory (a rename is only durable
// once the directory entry is). Used by the bottleneck cache (engine/cache_file.cpp,
// engine/cache_journal.cpp) and by tools/train and tools/predict for their outputs.
// Also the test-only crash points: ENGINE_CACHE_CRASH_AT=<point> SIGKILLs the process there.
// Errors are one line naming the path and strerror. Tests: tests/test_cache_crash.cpp.
#pragma once
#include <string>
#include <vector>

namespace engine {

// `<path>.tmp.<pid>`: a temporary name beside `path`, unique per process.
std::string durable_tmp_name(const std::string& path);
// Writes `bytes` to `path` durably: `<path>.tmp.<pid>`, fsync, rename, directory fsync. Any
// failure removes the temporary and throws; `path` then still holds its previous content.
void write_file_durable(const std::string& path, const std::string& bytes);
// Commits a temporary that the caller has written and closed: fsync `tmp`, rename it to `path`,
// fsync the directory of `path`. If the fsync fails the temporary is removed. With `crash_tag`,
// the crash points "<tag>:tmp_written" (before the rename) and "<tag>:renamed" (after the
// directory fsync) are offered to the crash tests.
void commit_file_durable(const std::string& tmp, const std::string& path,
                         const char* crash_tag = nullptr);

// The primitives the above are made of (the journal needs them one at a time).
std::string dir_of(const std::string& path);   // "." for a bare name, "/" for "/x"
std::string base_of(const std::string& path);  // the last component
void fsync_path(const std::string& path);
// EINVAL (a filesystem that cannot fsync directories) is accepted: renames there are as durable
// as that filesystem makes them.
void fsync_dir(const std::string& dir);
// Fsyncs and closes `fd`, the open temporary `tmp` (closed in every case); if either fails,
// removes `tmp` and throws "<tmp>: fsync/close failed: <reason>".
void fsync_close_or_unlink(int fd, const std::string& tmp);
void rename_or_fail(const std::string& from, const std::string& to);
void unlink_if_exists(const std::string& path);
bool file_exists(const std::string& path);
// The names in `dir` (not "." or ".."), sorted; a missing directory is empty.
std::vector<std::string> list_dir(const std::string& dir);

// Test-only crash points: ENGINE_CACHE_CRASH_AT=<point> makes the process SIGKILL itself when
// crash_point(<point>) is reached, so the crash tests can stop a run exactly where a kill -9 or
// power cut could (points listed in weights/CACHE.md). "<point>#<n>" crashes at the n-th time.
bool crash_requested(const char* point);
void crash_point(const char* point);

}  // namespace engine
