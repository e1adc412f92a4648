// engine/cache_merge.cpp: merge_caches (declared in engine/bottleneck_cache.h): joins shard caches
// into one, streamed chunk by chunk through the consolidated-file internals of engine/cache_file.h.
// Tests: tests/test_cache_merge.cpp.
#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "engine/cache_file.h"
#include "engine/error.h"

namespace engine {

using namespace cache_detail;

namespace {
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
    readers.push_back(std::make_unique<RowReader>(in[k].features.id.get(), in[k].c.size(),
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

}  // namespace engine
