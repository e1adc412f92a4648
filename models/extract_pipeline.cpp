// models/extract_pipeline.cpp: run_pipeline and extract_features (models/extract_pipeline.h):
// the decode workers and their bounded queue, double-buffered batching over a BottleneckBackend,
// and the journal writer thread.
#include "models/extract_pipeline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/error.h"
#include "engine/inception_contract.h"
#include "engine/sha256.h"

namespace engine {

namespace {

struct Item {
  size_t index = 0;  // into the file list
  std::string sha256;
  bool cached = false;
  std::string error;          // non-empty: skipped
  std::vector<float> pixels;  // Preprocessing::floats(): 299*299*3 in [-1, 1]
};

// A bounded multi-producer, single-consumer queue: producers block while it is full.
class BoundedQueue {
 public:
  BoundedQueue(size_t cap, int producers) : cap_(cap), producers_(producers) {}
  bool push(Item&& it) {
    std::unique_lock<std::mutex> l(mu_);
    not_full_.wait(l, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(it));
    not_empty_.notify_one();
    return true;
  }
  std::optional<Item> pop() {
    std::unique_lock<std::mutex> l(mu_);
    not_empty_.wait(l, [&] { return !q_.empty() || producers_ == 0 || closed_; });
    if (q_.empty() || closed_) return std::nullopt;
    Item it = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return it;
  }
  void producer_done() {
    std::lock_guard<std::mutex> l(mu_);
    --producers_;
    not_empty_.notify_all();
  }
  void close() {  // stop everything (strict mode, an error, the end)
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  size_t cap_;
  std::deque<Item> q_;
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  int producers_;
  bool closed_ = false;
};

// The decode workers: started by the constructor, closed and joined by the destructor on every
// exit path (a worker blocked on a full queue wakes up when it is closed).
class DecodeWorkers {
 public:
  DecodeWorkers(const std::vector<std::string>& files, const PipelineOptions& o,
                const PipelineHooks& h, int workers)
      : queue_(static_cast<size_t>(o.batch) * static_cast<size_t>(o.queue_batches), workers) {
    for (int t = 0; t < workers; ++t)
      pool_.emplace_back([this, &files, &o, &h] {
        for (size_t i = next_++; i < files.size(); i = next_++)
          if (!queue_.push(decode(files, i, o, h, take_buffer()))) break;
        queue_.producer_done();
      });
  }
  ~DecodeWorkers() {
    queue_.close();
    for (auto& t : pool_) t.join();
  }
  std::optional<Item> pop() { return queue_.pop(); }
  // Hands an item's pixel buffer back for the next decode. A fresh 1 MiB vector per image cost
  // its zero fill and page faults on top of the decode (about as much CPU again as libjpeg, which
  // shows at bf16/int8 speeds); the free list holds at most queue + workers buffers.
  void recycle(std::vector<float>&& pixels) {
    std::lock_guard<std::mutex> l(free_mu_);
    free_.push_back(std::move(pixels));
  }

 private:
  std::vector<float> take_buffer() {
    std::lock_guard<std::mutex> l(free_mu_);
    if (free_.empty()) return {};
    std::vector<float> b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  static Item decode(const std::vector<std::string>& files, size_t i, const PipelineOptions& o,
                     const PipelineHooks& h, std::vector<float>&& buffer) {
    Item it;
    it.index = i;
    it.pixels = std::move(buffer);
    try {
      const std::vector<uint8_t> bytes = read_image_file_bytes(files[i]);
      if (o.hash) it.sha256 = sha256_hex(bytes.data(), bytes.size());
      if (h.cached && h.cached(i, it.sha256)) {
        it.cached = true;
      } else {
        it.pixels.resize(static_cast<size_t>(o.pre.floats()));
        preprocess_image(bytes, files[i], o.pre, it.pixels.data(), o.max_pixels);
      }
    } catch (const std::exception& e) {
      it.error = e.what();
    }
    return it;
  }
  BoundedQueue queue_;
  std::mutex free_mu_;
  std::vector<std::vector<float>> free_;
  std::atomic<size_t> next_{0};
  std::vector<std::thread> pool_;  // last: the threads use the members above
};

}  // namespace

PipelineStats run_pipeline(const std::vector<std::string>& files, BottleneckBackend& net,
                           const PipelineOptions& opt, const PipelineHooks& h) {
  ENGINE_CHECK(opt.pre.size == kInceptionInput, "run_pipeline: preprocessing size ", opt.pre.size,
               ", the network takes ", kInceptionInput);
  PipelineOptions o = opt;
  o.batch = static_cast<int>(std::min<int64_t>(std::max(1, o.batch), net.max_batch()));
  o.queue_batches = std::max(1, o.queue_batches);
  const int workers = o.workers > 0
                          ? o.workers
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t image = static_cast<size_t>(o.pre.floats());

  PipelineStats stats;
  // Per slot: the images gathered into it, and whether it was launched and not yet delivered.
  struct Slot {
    std::vector<size_t> indices;
    std::vector<std::string> sha256;
    bool in_flight = false;
  } slots[2];
  int cur = 0;  // the slot being filled
  auto deliver = [&](int s) {
    net.wait(s);
    if (h.batch) h.batch(slots[s].indices, slots[s].sha256, net.output(s));
    stats.batches += 1;
    stats.images += slots[s].indices.size();
    slots[s].indices.clear();
    slots[s].sha256.clear();
    slots[s].in_flight = false;
  };
  // Launches the slot being filled, then makes the other one free to fill: on the GPU its batch
  // was queued before this one, so waiting for it overlaps this launch's work.
  auto submit = [&] {
    if (slots[cur].indices.empty()) return;
    net.launch(cur, static_cast<int64_t>(slots[cur].indices.size()));
    slots[cur].in_flight = true;
    cur ^= 1;
    if (slots[cur].in_flight) deliver(cur);
  };

  DecodeWorkers decoders(files, o, h, workers);
  while (auto item = decoders.pop()) {
    if (!item->error.empty()) {
      if (h.skipped && h.skipped(item->index, item->error)) {
        stats.stopped = true;
        break;
      }
    } else if (item->cached) {
      if (h.reused) h.reused(item->index);
    } else {
      Slot& s = slots[cur];
      std::memcpy(net.input(cur) + s.indices.size() * image, item->pixels.data(),
                  image * sizeof(float));
      s.indices.push_back(item->index);
      s.sha256.push_back(std::move(item->sha256));
      if (static_cast<int>(s.indices.size()) == o.batch) submit();
    }
    if (item->pixels.capacity() > 0) decoders.recycle(std::move(item->pixels));
  }
  if (!stats.stopped) submit();  // the last, partial batch
  // What is still in flight, oldest first (the slot not being filled was launched first).
  if (slots[cur ^ 1].in_flight) deliver(cur ^ 1);
  if (slots[cur].in_flight) deliver(cur);
  return stats;
}

// ------------------------------------------------------------------------ extract into a cache

CacheSink CacheSink::of(BottleneckCache& cache) {
  return {[&cache](const std::string& key, const std::string& sha) { return cache.has(key, sha); },
          [&cache](const std::vector<CacheFeature>& batch) { cache.append(batch); }};
}

namespace {

struct WriterBatch {
  std::vector<size_t> items;
  std::vector<CacheFeature> features;
};

// The journal writer thread: takes batches in order, writes each through `write`. push() blocks
// while `depth` batches wait, so memory stays bounded. The first failure stops the thread and
// is rethrown by the next push() or by finish(); the batches written before it stay written.
// The destructor (an error path elsewhere) still writes every batch already pushed, then joins.
class JournalWriter {
 public:
  JournalWriter(std::function<void(WriterBatch&)> write, size_t depth)
      : write_(std::move(write)), depth_(std::max<size_t>(1, depth)), thread_([this] { loop(); }) {}
  ~JournalWriter() { stop(); }
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  void push(WriterBatch&& b) {
    std::unique_lock<std::mutex> l(mu_);
    space_.wait(l, [&] { return q_.size() < depth_ || error_; });
    if (error_) std::rethrow_exception(error_);
    q_.push_back(std::move(b));
    ready_.notify_one();
  }
  // Returns once every pushed batch is written; rethrows the writer's failure.
  void finish() {
    stop();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closing_ = true;
    }
    ready_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void loop() {
    for (;;) {
      WriterBatch b;
      {
        std::unique_lock<std::mutex> l(mu_);
        ready_.wait(l, [&] { return !q_.empty() || closing_; });
        if (q_.empty()) return;
        b = std::move(q_.front());
        q_.pop_front();
      }
      space_.notify_one();
      try {
        write_(b);
      } catch (...) {
        std::lock_guard<std::mutex> l(mu_);
        error_ = std::current_exception();
        q_.clear();  // later batches are not written: their pieces would come after a gap
        space_.notify_all();
        return;
      }
    }
  }
  std::function<void(WriterBatch&)> write_;
  size_t depth_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<WriterBatch> q_;
  bool closing_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: it runs loop() over the members above
};

}  // namespace

ExtractResult extract_features(const std::vector<ExtractItem>& items, BottleneckBackend& net,
                               const CacheSink& sink, const ExtractOptions& o, Progress* progress) {
  ExtractResult r;
  r.ok.assign(items.size(), 0);
  std::mutex progress_mu;  // the writer thread and this one both advance it
  auto advance = [&](int64_t n, const std::string* note) {
    if (!progress) return;
    std::lock_guard<std::mutex> l(progress_mu);
    if (note) progress->set_note(*note);
    progress->advance(n);
  };
  std::atomic<size_t> extracted{0};
  JournalWriter writer(
      [&](WriterBatch& b) {
        sink.append(b.features);  // durable when it returns: only now do these images count
        for (size_t i : b.items) r.ok[i] = 1;  // bytes: no other thread touches these entries
        extracted += b.items.size();
        advance(static_cast<int64_t>(b.items.size()), nullptr);
      },
      o.writer_depth);

  std::vector<std::string> files;
  files.reserve(items.size());
  for (const ExtractItem& it : items) files.push_back(it.file);
  PipelineHooks h;
  if (sink.has)
    h.cached = [&](size_t i, const std::string& sha) { return sink.has(items[i].key, sha); };
  h.reused = [&](size_t i) {
    r.ok[i] = 1;
    ++r.reused;
    advance(1, nullptr);
  };
  h.skipped = [&](size_t i, const std::string& reason) {
    r.skipped.push_back({items[i].key, reason});
    if (o.on_skip) o.on_skip(reason);
    const std::string note = std::to_string(r.skipped.size()) + " skipped";
    advance(1, &note);
    return o.strict;
  };
  h.batch = [&](const std::vector<size_t>& idx, const std::vector<std::string>& sha,
                const float* b) {
    WriterBatch wb;
    wb.items = idx;
    wb.features.reserve(idx.size());
    for (size_t k = 0; k < idx.size(); ++k)
      wb.features.push_back(
          {items[idx[k]].key, sha[k],
           std::vector<float>(b + k * kBottleneckSize, b + (k + 1) * kBottleneckSize)});
    writer.push(std::move(wb));  // rethrows an earlier writer failure
  };
  PipelineOptions po = o.pipeline;
  po.hash = true;  // the cache's content key
  const PipelineStats s = run_pipeline(files, net, po, h);
  writer.finish();
  r.extracted = extracted;
  if (s.stopped)
    fail("--strict: stopping at the first bad image (", r.skipped.size(),
         " skipped); work so far is kept in the cache journal");
  return r;
}

// ------------------------------------------------------------------------ int8 calibration

CalibrationSample calibrate_on_files(const InceptionWeights& w, std::vector<std::string> files,
                                     const PipelineOptions& o, size_t max_images) {
  ENGINE_CHECK(max_images >= 1, "calibrate_on_files: max_images must be >= 1");
  const auto t0 = std::chrono::steady_clock::now();
  std::sort(files.begin(), files.end());
  const size_t k = std::min(max_images, files.size());
  std::vector<std::string> pick;
  for (size_t i = 0; i < k; ++i) pick.push_back(files[i * files.size() / k]);
  const size_t per = static_cast<size_t>(o.pre.floats());
  std::vector<float> pixels(pick.size() * per);
  std::vector<uint8_t> ok(pick.size(), 0);
  // Decoded in parallel (each image on its own, so the result does not depend on the threads).
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < static_cast<int64_t>(pick.size()); ++i) {
    try {
      const size_t u = static_cast<size_t>(i);
      preprocess_image(read_image_file_bytes(pick[u]), pick[u], o.pre, pixels.data() + u * per,
                       o.max_pixels);
      ok[u] = 1;
    } catch (const std::exception&) {
      // unreadable: skipped here; extraction reports it with its reason
    }
  }
  int64_t n = 0;
  for (size_t i = 0; i < pick.size(); ++i)
    if (ok[i]) {
      if (static_cast<size_t>(n) != i)
        std::memmove(pixels.data() + n * per, pixels.data() + i * per, per * sizeof(float));
      ++n;
    }
  if (n == 0)
    fail("int8 calibration: none of the ", pick.size(), " images picked from ", files.size(),
         " could be read (", pick.empty() ? "no images" : pick[0] + ", ...",
         "); use --precision fp32 or bf16");
  CalibrationSample r;
  r.tried = pick.size();
  const Tensor x = Tensor::view(pixels.data(), Shape{n, o.pre.size, o.pre.size, 3});
  r.calibration = calibrate_int8(w, x);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace engine
