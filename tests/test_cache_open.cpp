// tests/test_cache_open.cpp: opening a bottleneck cache (engine/bottleneck_cache.cpp): other
// settings refused unless forced (consolidated file and journal), the lock, a corrupt consolidated
// file (one line) and corrupt journal pieces (ignored with a warning, re-extracted).
// Run: ./test_cache_open (writes only under the system temporary directory).
#include <gtest/gtest.h>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

// ------------------------------------------------------------------- settings, lock, corruption
TEST(CacheOpen, SettingsMismatchIsRefusedUnlessForced) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(10);
  run_to_end(p, l, settings_a());
  std::string msg = error_of([&] { BottleneckCache c(p, settings_b(), false); });
  EXPECT_ONE_LINE_ERROR(msg, p, settings_a().weights_sha256, settings_b().weights_sha256,
                        "--force");
  CacheSettings other_pre = settings_a();
  other_pre.preprocessing = Preprocessing::for_resize(ResizeFilter::Bilinear, false).key();
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, other_pre, false); }), "bilinear",
                        "--force");
  CacheSettings other_version = settings_a();
  other_version.engine_version = "test 2.0";  // informational only
  {
    BottleneckCache c(p, other_version, false);
    EXPECT_EQ(c.cached(), 10u);
  }
  {
    BottleneckCache c(p, settings_b(), true);
    EXPECT_EQ(c.cached(), 0u);
    EXPECT_FALSE(exists(p)) << "force discards the old cache at once";
  }
  CacheContents r = run_to_end(p, l, settings_b());
  EXPECT_EQ(r.settings.weights_sha256, settings_b().weights_sha256);
  EXPECT_EQ(r.size(), 10u);
}

TEST(CacheOpen, JournalFromOtherSettingsIsRefusedUnlessForced) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(14);
  int st = run_child([&] {
    BottleneckCache c(p, settings_a(), false);
    extract(c, l);
    raise(SIGKILL);
  });
  ASSERT_TRUE(killed(st));
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_b(), false); }),
                        "piece-0000000000000001.bin", settings_a().weights_sha256, "--force");
  BottleneckCache c(p, settings_b(), true);
  EXPECT_EQ(c.cached(), 0u);
  EXPECT_FALSE(exists(p + ".journal"));
}

TEST(CacheOpen, LockHeldByAnotherProcessIsRefused) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  for (bool kill_holder : {false, true}) {
    int ready[2], go[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      BottleneckCache holder(p, settings_a(), false);
      char b = 1;
      if (write(ready[1], &b, 1) != 1) _exit(2);
      if (read(go[0], &b, 1) < 0) _exit(2);  // hold the lock until the parent says so
      _exit(0);
    }
    char b = 0;
    ASSERT_EQ(read(ready[0], &b, 1), 1);
    EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_a(), false); }), p,
                          "is in use by another extract process");
    if (kill_holder)
      kill(pid, SIGKILL);  // a killed holder releases the lock with its process
    else
      EXPECT_EQ(write(go[1], &b, 1), 1);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT_EQ(error_of([&] { BottleneckCache c(p, settings_a(), false); }), "");
    for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
  }
}

TEST(CacheOpen, CorruptConsolidatedFileIsOneLine) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  run_to_end(p, make_listing(20));
  std::string bytes = read_bytes(p);
  write_bytes(p, bytes.substr(0, bytes.size() / 2));
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p);
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_a(), false); }), p);
  write_bytes(p, "this is not HDF5, just text\n");
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(p); }), p, "not an HDF5 file");
  {
    BottleneckCache c(p, settings_a(), true);
    EXPECT_EQ(c.cached(), 0u);
  }
  EXPECT_EQ(run_to_end(p, make_listing(20)).size(), 20u);
}

TEST(CacheOpen, CorruptJournalPieceIsIgnoredWithAWarning) {
  TempDir dir;
  std::string p = dir.file("c.h5");
  Listing l = make_listing(35);
  ASSERT_TRUE(killed(run_child([&] {
    BottleneckCache c(p, settings_a(), false);
    extract(c, l);
    raise(SIGKILL);
  })));
  std::string piece2 = p + ".journal/piece-0000000000000002.bin";
  std::string piece5 = p + ".journal/piece-0000000000000005.bin";
  std::string b = read_bytes(piece2);
  b[b.size() / 2] ^= 0x10;  // one bit in a feature
  write_bytes(piece2, b);
  std::string b5 = read_bytes(piece5);
  write_bytes(piece5, b5.substr(0, b5.size() - 100));  // short piece
  ::testing::internal::CaptureStderr();
  size_t cached = 0, pieces = 0;
  std::vector<bool> present;
  {
    BottleneckCache c(p, settings_a(), false);
    cached = c.cached(), pieces = c.journal_pieces();
    for (size_t i = 0; i < l.images.size(); ++i)
      present.push_back(c.has(l.images[i].path, content_sha(l.images[i].path, 0)));
  }
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: " + piece2 + ": journal piece ignored (checksum"), std::string::npos)
      << err;
  EXPECT_NE(err.find(piece5), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2);
  EXPECT_EQ(pieces, 3u);
  EXPECT_EQ(cached, 21u);
  for (size_t i = 0; i < l.images.size(); ++i)
    EXPECT_EQ(present[i], !(i / 7 == 1 || i / 7 == 4)) << i;
  TempDir ref;
  EXPECT_TRUE(same_contents(run_to_end(p, l), run_to_end(ref.file("r.h5"), l)));
}
