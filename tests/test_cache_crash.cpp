// tests/test_cache_crash.cpp: crash recovery of the bottleneck cache (engine/bottleneck_cache.cpp,
// engine/cache_journal.cpp, engine/durable_file.cpp): a forked child is SIGKILLed at every durable
// step (after appends, mid piece write, before and after the piece rename, before and after the
// consolidated rename, half-way through the journal deletion) and a rerun must end with exactly
// the features of an uninterrupted run (memcmp); a changed image and a later piece winning.
// Run: ./test_cache_crash (writes only under the system temporary directory).
#include <gtest/gtest.h>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

// ------------------------------------------------------------------------- crash recovery
class CacheCrash : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("ENGINE_CACHE_CRASH_AT");
    reference_ = run_to_end(dir_.file("reference.h5"), listing_);
    ASSERT_EQ(reference_.size(), listing_.images.size());
  }
  // Child: open the cache, append `appends` batches, arm `point`, run `then`; must die by SIGKILL.
  void crash(size_t appends, const char* point, const std::function<void(BottleneckCache&)>& then) {
    int status = run_child([&] {
      BottleneckCache cache(path_, settings_a(), false);
      extract(cache, listing_, appends);
      arm(point);
      then(cache);
    });
    ASSERT_TRUE(killed(status)) << "child status " << status << " at " << point;
  }
  // The child appends every batch (5) and is killed at `point` inside finalize.
  void crash_finalizing(const char* point) {
    crash(5, point, [&](BottleneckCache& c) {
      c.finalize(listing_.images, listing_.class_names, listing_.skipped);
    });
  }
  size_t images_in_batches(size_t b) const {
    return std::min(listing_.images.size(), b * listing_.batch);
  }
  void expect_resumes_to_reference(size_t durable_images) {
    {
      BottleneckCache cache(path_, settings_a(), false);
      EXPECT_EQ(cache.cached(), durable_images);
      for (size_t i = 0; i < listing_.images.size(); ++i)
        EXPECT_EQ(cache.has(listing_.images[i].path, content_sha(listing_.images[i].path, 0)),
                  i < durable_images)
            << listing_.images[i].path;
    }
    EXPECT_TRUE(same_contents(run_to_end(path_, listing_), reference_));
    EXPECT_FALSE(exists(path_ + ".journal"));
    EXPECT_EQ(list(dir_.file("")), (std::vector<std::string>{"cache.h5", "cache.h5.lock",
                                                             "reference.h5", "reference.h5.lock"}));
  }
  TempDir dir_;
  Listing listing_ = make_listing();
  std::string path_ = dir_.file("cache.h5");
  CacheContents reference_;
};

TEST_F(CacheCrash, KilledBetweenAppends) {
  for (size_t k : {size_t{0}, size_t{2}, size_t{5}}) {
    SCOPED_TRACE("killed after " + std::to_string(k) + " appends");
    std::remove(path_.c_str());  // each round starts from an empty cache
    crash(k, "none", [](BottleneckCache&) { raise(SIGKILL); });
    {
      BottleneckCache cache(path_, settings_a(), false);
      EXPECT_EQ(cache.journal_pieces(), k);
    }
    expect_resumes_to_reference(images_in_batches(k));
  }
}

TEST_F(CacheCrash, KilledInTheMiddleOfWritingAPiece) {
  crash(2, "piece:mid_write", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  std::string tmp = path_ + ".journal/piece-0000000000000003.bin.tmp";
  ASSERT_TRUE(exists(tmp));  // the half-written piece is there, under its temporary name only
  EXPECT_FALSE(exists(path_ + ".journal/piece-0000000000000003.bin"));
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 2u);
    EXPECT_FALSE(exists(tmp)) << "leftover temporaries are deleted";
  }
  expect_resumes_to_reference(images_in_batches(2));
}

TEST_F(CacheCrash, KilledBeforeThePieceRename) {
  crash(2, "piece:tmp_written", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  EXPECT_TRUE(exists(path_ + ".journal/piece-0000000000000003.bin.tmp"));
  expect_resumes_to_reference(images_in_batches(2));
}

TEST_F(CacheCrash, KilledAfterThePieceRename) {
  crash(2, "piece:renamed", [&](BottleneckCache& c) { extract(c, listing_, 3); });
  expect_resumes_to_reference(images_in_batches(3));
}

TEST_F(CacheCrash, KilledBeforeTheConsolidatedRename) {
  crash_finalizing("consolidated:tmp_written");
  EXPECT_FALSE(exists(path_)) << "nothing may appear under the final name before the rename";
  size_t tmps = 0;
  for (const std::string& n : list(dir_.file(""))) tmps += n.rfind("cache.h5.tmp.", 0) == 0;
  EXPECT_EQ(tmps, 1u);
  expect_resumes_to_reference(listing_.images.size());  // also checks the temporary is gone
}

TEST_F(CacheCrash, KilledAfterTheConsolidatedRename) {
  crash_finalizing("consolidated:renamed");
  EXPECT_TRUE(same_contents(read_cache(path_), reference_));
  EXPECT_EQ(list(path_ + ".journal").size(), 5u);
  expect_resumes_to_reference(listing_.images.size());
}

TEST_F(CacheCrash, KilledHalfWayThroughTheJournalDeletion) {
  crash_finalizing("journal:partly_deleted");
  EXPECT_TRUE(same_contents(read_cache(path_), reference_));
  EXPECT_EQ(list(path_ + ".journal").size(), 4u);
  expect_resumes_to_reference(listing_.images.size());
}

TEST_F(CacheCrash, SecondRunOverAConsolidatedCacheWithAChangedImage) {
  Listing first = listing_;
  first.images.resize(14), first.version.resize(14);
  run_to_end(path_, first);
  Listing changed = listing_;
  changed.version[3] = 1;  // same path, new bytes: must be extracted again
  crash(0, "piece:renamed", [&](BottleneckCache& c) { extract(c, changed); });
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 1u);
    EXPECT_TRUE(cache.has(changed.images[3].path, content_sha(changed.images[3].path, 1)));
    EXPECT_FALSE(cache.has(changed.images[3].path, content_sha(changed.images[3].path, 0)));
    EXPECT_EQ(cache.cached(), 14u);  // only the changed image went to the first piece
  }
  TempDir ref_dir;
  CacheContents want = run_to_end(ref_dir.file("ref.h5"), changed);
  EXPECT_TRUE(same_contents(run_to_end(path_, changed), want));
  EXPECT_FALSE(same_contents(want, reference_));
}

TEST_F(CacheCrash, LaterPieceWinsOnReplay) {
  const std::string& img = listing_.images[0].path;
  ASSERT_TRUE(killed(run_child([&] {
    BottleneckCache cache(path_, settings_a(), false);
    cache.append({make_feature(img, 1)});
    cache.append({make_feature(img, 2)});  // the image changed during the run
    cache.append({make_feature(img, 1)});
    cache.append({make_feature(img, 3)});
    raise(SIGKILL);
  })));
  {
    BottleneckCache cache(path_, settings_a(), false);
    EXPECT_EQ(cache.journal_pieces(), 4u);
    EXPECT_EQ(cache.cached(), 1u);
    EXPECT_TRUE(cache.has(img, content_sha(img, 3)));
    EXPECT_FALSE(cache.has(img, content_sha(img, 1)));
  }
  // Killed after the first journal piece is deleted: the pieces left must still replay to v3.
  crash(0, "journal:partly_deleted",
        [&](BottleneckCache& c) { c.finalize({listing_.images[0]}, listing_.class_names, {}); });
  BottleneckCache cache(path_, settings_a(), false);
  EXPECT_EQ(cache.journal_pieces(), 3u);
  EXPECT_TRUE(cache.has(img, content_sha(img, 3)));
  cache.finalize({listing_.images[0]}, listing_.class_names, {});
  CacheContents r = read_cache(path_);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(std::memcmp(r.features.data(), feature_for(img, 3).data(), kF * 4), 0);
}
