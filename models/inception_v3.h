// models/inception_v3.h: Inception v3 as Keras builds it, CPU path: N x 299 x 299 x 3 images in
// [-1, 1] (NHWC) -> N x 2048 bottlenecks (global average pool of mixed10). It executes the graph
// of models/inception_graph.h op by op; every conv is a Conv2dCpu with its batch norm folded in
// and ReLU fused; activations come from one BufferPool and are handed back after their last
// reader, so repeated forward passes of a batch size allocate nothing new.
// A Tap callback sees the output of the stem and of every mixed block, for tests and debugging.
// The batch runs through the network in micro-batches (default 1 image): one image's
// activations stay in a core's 2 MiB L2, and batch 8 as one pass was 1.3x slower per image than
// batch 1. When there are several micro-batches they are spread over the OpenMP threads, one
// micro-batch per thread with single-threaded convolutions: small 17x17 and 8x8 layers split
// poorly over cores, and 2 images side by side beat 1 image on 2 cores (bench/README.md).
// Each thread has its own BufferPool; taps are serialised.
#pragma once
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "engine/buffer_pool.h"
#include "kernels/conv2d.h"
#include "models/inception_graph.h"
#include "models/inception_weights.h"

namespace engine {

// The micro-batch schedule both CPU executors share (this one and InceptionV3CpuLowp): how many
// threads run micro-batches (all of them in batch-invariant mode, else no more than there are
// micro-batches), and the OpenMP loop that runs micro-batch c on thread c % threads, keeping the
// first exception (an exception must not leave an OpenMP region) and rethrowing it after.
int micro_batch_threads(int64_t chunks, bool batch_invariant);
void run_micro_batches(int64_t chunks, int threads, const std::function<void(int64_t)>& run);

class InceptionV3Cpu {
 public:
  // t holds images [first, first + t.n()) of the batch.
  using Tap = std::function<void(const std::string& name, const Tensor& t, int64_t first)>;
  explicit InceptionV3Cpu(const InceptionWeights& w, int64_t micro_batch = 1);

  // x: (N, 299, 299, 3); bottleneck: (N, 2048), preallocated. Taps: "stem", "mixed0".."mixed10".
  void forward(const Tensor& x, Tensor& bottleneck, const Tap& tap = {});
  int64_t micro_batch() const { return micro_batch_; }
  // The tap sees every tensor of the graph under its own name ("activation_5", "mixed3", ...),
  // not only the block outputs: calibrate_int8 (models/inception_v3_lowp.h) measures ranges so.
  void set_tap_every_tensor(bool on) { tap_every_tensor_ = on; }
  // Batch-invariant mode: every micro-batch runs on one thread with single-threaded primitives,
  // even when the batch has fewer micro-batches than threads, so an image's bottleneck is
  // bit-identical whatever batch it arrives in (tools/extract: a resumed run equals an unbroken
  // one).
  void set_batch_invariant(bool on) { batch_invariant_ = on; }
  // The Keras `predictions` top (softmax over classes) when the weight file has one.
  bool has_top() const { return has_top_; }
  int64_t top_classes() const { return top_classes_; }
  void predict_top(const Tensor& bottleneck, Tensor& probs) const;

  double flops_per_image() const;    // sum over the 94 convs of 2*kh*kw*cin*cout*Ho*Wo
  int64_t activation_bytes() const;  // over all threads' pools
  int64_t activation_allocations() const;

 private:
  // Runs one graph op (not the global average pool) on its inputs into a pooled tensor.
  PooledTensor run_op(const GraphOp& op, const std::vector<const Tensor*>& inputs);
  void forward_chunk(const Tensor& x, Tensor& bottleneck, const Tap& tap, int64_t first);
  BufferPool& pool();  // the calling thread's pool

  std::vector<Conv2dCpu> convs_;
  std::vector<BufferPool> pools_;  // one per OpenMP thread; sized before parallel regions
  int64_t micro_batch_;
  bool batch_invariant_ = false;
  bool tap_every_tensor_ = false;
  std::mutex tap_mu_;
  bool has_top_ = false;
  int64_t top_classes_ = 0;
  std::vector<float> top_kernel_, top_bias_;
};

}  // namespace engine
