// tests/test_cache_open.cpp: opening a bottleneck cache (engine/bottleneck_cache.cpp): other
// settings refused unless forced (consolidated file and journal), the precision as a setting
// (caches and pieces written before it read as fp32), the lock, a corrupt consolidated file (one
// line) and corrupt journal pieces (ignored with a warning, re-extracted).
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

// --precision: fp32 caches stay format_version 1 (with a `precision` attribute, or without one as
// written before it existed), tf32/fp16 caches are version 2; a cache or journal piece of another
// precision is refused like other settings.
TEST(CacheOpen, PrecisionIsASettingAndOldFilesReadAsFp32) {
  TempDir dir;
  const std::string p = dir.file("c.h5");
  Listing l = make_listing(10);
  CacheSettings tf32 = settings_a();
  tf32.precision = "tf32";
  CacheContents t = run_to_end(p, l, tf32);
  EXPECT_EQ(t.settings.precision, "tf32");
  {
    H5File f = H5File::open_read(p);
    EXPECT_EQ(h5_read_int_attr(f.id(), "format_version", p), 2);
    EXPECT_EQ(h5_read_string_attr(f.id(), "precision", p), "tf32");
  }
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, settings_a(), false); }), p,
                        "precision tf32", "precision fp32", "--force");
  CacheContents f32 = run_to_end(p, l, settings_a(), true);
  EXPECT_EQ(f32.settings.precision, "fp32");
  {
    H5File f = H5File::open_rw(p);
    EXPECT_EQ(h5_read_int_attr(f.id(), "format_version", p), 1);
    h5_delete_attr(f.id(), "precision", p);  // as written before the attribute existed
    f.close();
  }
  EXPECT_EQ(read_cache(p).settings.precision, "fp32");
  {
    BottleneckCache c(p, settings_a(), false);
    EXPECT_EQ(c.cached(), 10u);
  }
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, tf32, false); }), "precision fp32",
                        "precision tf32", "--force");
  CacheSettings bogus = settings_a();
  bogus.precision = "fp8";
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, bogus, false); }), "fp8",
                        "fp32, tf32, fp16, bf16 or int8");

  // A tf32 journal piece is refused by an fp32 run, and the reverse.
  const std::string q = dir.file("j.h5");
  {
    BottleneckCache c(q, tf32, false);
    c.append({make_feature("a.jpg")});
  }
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(q, settings_a(), false); }),
                        "piece-0000000000000001.bin", "precision tf32", "--force");
  BottleneckCache c(q, tf32, false);
  EXPECT_TRUE(c.has("a.jpg", content_sha("a.jpg", 0)));
}

// A journal piece in the version 1 layout (no precision string: written before it existed, by
// the CPU) replays as fp32 and is refused by a tf32 run.
TEST(CacheOpen, Version1JournalPieceReadsAsFp32) {
  TempDir dir;
  const std::string p = dir.file("c.h5");
  const CacheSettings s = settings_a();
  const CacheFeature feat = make_feature("benign/x.jpg");
  std::string b = "BNJ1";
  auto u32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); };
  auto str = [&](const std::string& x) { u32(static_cast<uint32_t>(x.size())), b += x; };
  u32(1), u64(1), u64(kF), str(s.weights_sha256), str(s.preprocessing);
  str(feat.path), b += feat.sha256;
  b.append(reinterpret_cast<const char*>(feat.feature.data()), kF * sizeof(float));
  Sha256 h;
  h.update(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  const auto d = h.digest();
  b.append(reinterpret_cast<const char*>(d.data()), d.size());
  ASSERT_EQ(::mkdir((p + ".journal").c_str(), 0755), 0);
  write_bytes(p + ".journal/piece-0000000000000001.bin", b);
  CacheSettings tf32 = s;
  tf32.precision = "tf32";
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, tf32, false); }),
                        "piece-0000000000000001.bin", "precision fp32", "--force");
  BottleneckCache c(p, s, false);
  ASSERT_TRUE(c.has(feat.path, feat.sha256));
  c.finalize({{feat.path, 0, ""}}, {"benign"}, {});
  const CacheContents r = read_cache(p);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r.settings.precision, "fp32");
  EXPECT_EQ(0, std::memcmp(r.features.data(), feat.feature.data(), kF * sizeof(float)));
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

// int8: the calibration (activation ranges) is a setting, stored as an attribute of the file and
// in journal pieces (version 3); another calibration is refused like another precision, naming
// the file, unless forced; peek_cache_settings finds it in the file or, before the first
// finalize, in the journal (tools/extract reuses it on resume); merge keeps it and refuses two.
TEST(CacheOpen, Int8CalibrationIsASettingKeptByJournalAndMerge) {
  TempDir dir;
  const std::string p = dir.file("c.h5");
  Listing l = make_listing(14);
  CacheSettings cal_a = settings_a(), cal_b = settings_a();
  cal_a.precision = cal_b.precision = "int8";
  cal_a.calibration = "int8-minmax-v1 images=2 input_1=1 mixed10=7.5";
  cal_b.calibration = "int8-minmax-v1 images=2 input_1=1 mixed10=7.25";
  EXPECT_FALSE(peek_cache_settings(p).has_value());
  // A run killed before finalize: its settings (calibration included) are in the journal only.
  ASSERT_TRUE(killed(run_child([&] {
    BottleneckCache c(p, cal_a, false);
    extract(c, l, 1);
    raise(SIGKILL);
  })));
  ASSERT_FALSE(exists(p));
  std::optional<CacheSettings> peek = peek_cache_settings(p);
  ASSERT_TRUE(peek.has_value());
  EXPECT_EQ(peek->precision, "int8");
  EXPECT_EQ(peek->calibration, cal_a.calibration);
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, cal_b, false); }),
                        "piece-0000000000000001.bin", "precision int8 (calibration sha256",
                        "--force");
  {
    BottleneckCache c(p, cal_a, false);
    EXPECT_EQ(c.cached(), l.batch);  // the first batch was durable
  }
  CacheContents r = run_to_end(p, l, cal_a);
  EXPECT_EQ(r.settings.calibration, cal_a.calibration);
  {
    H5File f = H5File::open_read(p);
    EXPECT_EQ(h5_read_int_attr(f.id(), "format_version", p), 2);
    EXPECT_EQ(h5_read_string_attr(f.id(), "calibration", p), cal_a.calibration);
  }
  peek = peek_cache_settings(p);
  ASSERT_TRUE(peek.has_value());
  EXPECT_EQ(peek->calibration, cal_a.calibration);
  const std::string msg = error_of([&] { BottleneckCache c(p, cal_b, false); });
  EXPECT_ONE_LINE_ERROR(msg, p, "--force");
  EXPECT_NE(msg.find("calibration sha256"), msg.rfind("calibration sha256"))
      << "both named: " << msg;
  CacheSettings no_cal = cal_a;
  no_cal.calibration.clear();
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, no_cal, false); }), p,
                        "int8 without a calibration");
  CacheSettings fp32_cal = settings_a();
  fp32_cal.calibration = cal_a.calibration;
  EXPECT_ONE_LINE_ERROR(error_of([&] { BottleneckCache c(p, fp32_cal, false); }), p,
                        "only int8 has one");
  // An int8 file whose calibration attribute is gone (or is not one line): one line naming it.
  const std::string q = dir.file("broken.h5");
  run_to_end(q, l, cal_a);
  {
    H5File f = H5File::open_rw(q);
    h5_delete_attr(f.id(), "calibration", q);
    f.close();
  }
  EXPECT_ONE_LINE_ERROR(error_of([&] { read_cache(q); }), q, "int8 without a calibration");
  EXPECT_ONE_LINE_ERROR(error_of([&] { peek_cache_settings(q); }), q, "calibration");
  // Merge: shards of one calibration keep it; two calibrations are refused.
  Listing shard[2];
  for (size_t i = 0; i < l.images.size(); ++i) {
    shard[i % 2].images.push_back(l.images[i]);
    shard[i % 2].version.push_back(0);
  }
  shard[1].skipped.clear();
  run_to_end(dir.file("s0.h5"), shard[0], cal_a);
  run_to_end(dir.file("s1.h5"), shard[1], cal_a);
  run_to_end(dir.file("s1b.h5"), shard[1], cal_b);
  merge_caches({dir.file("s0.h5"), dir.file("s1.h5")}, dir.file("m.h5"));
  EXPECT_EQ(read_cache(dir.file("m.h5")).settings.calibration, cal_a.calibration);
  EXPECT_TRUE(same_contents(read_cache(dir.file("m.h5")), r));
  EXPECT_ONE_LINE_ERROR(error_of([&] {
                          merge_caches({dir.file("s0.h5"), dir.file("s1b.h5")}, dir.file("m2.h5"));
                        }),
                        dir.file("s0.h5"), dir.file("s1b.h5"), "calibration sha256");
}
