// models/inception_v3_cuda.h: Inception v3 on the GPU (the CUDA twin of models/inception_v3.h:
// both execute the graph of models/inception_graph.h, so blocks and concat order are the same):
// N x 299 x 299 x 3 images in [-1, 1] (NHWC, fp32, host) -> N x 2048 fp32 bottlenecks. Every conv
// is a Conv2dCudnn (cuDNN graph API, BN folded, bias + ReLU fused); pools, concat and the global
// average pool are the kernels of kernels/pool2d_cuda.h. GPU memory, stream, cuDNN handle, events
// and CUDA graphs are held by the owners of engine/cuda_resources.h.
//
// Memory: weights are uploaded once (fp16 copies in FP16 mode); the graph is first lowered to a
// list of ops over logical tensors, each tensor's lifetime is the span of ops touching it, and the
// activation arena (one cudaMalloc, sized for max_batch) places tensors first-fit by size so that
// tensors alive at the same time never overlap. Smaller batches reuse the same offsets. One cuDNN
// workspace sized for the largest plan at max_batch (plans for smaller batches are restricted to
// it). Nothing is allocated after construction except a tap buffer on the first forward_blocks.
//
// Concat: each branch's last conv writes a packed tensor which a copy kernel moves into the
// block output's channel slice (convs writing straight into a strided slice were 1.5-4.6x slower
// on an H100, bench/README.md GPU section); max-pool branches write their slice directly.
//
// Precision/layout: FP32 (exact, no tensor-core engines), TF32, FP16 (half activations and
// weights, fp32 accumulation, fp32 bottleneck). Layout is an option: NHWC by default in every
// precision (the fused conv+bias+ReLU graph was measured in NHWC, and cudnn-frontend issues #104,
// #171, #172 report NCHW fusion graphs without an engine); FP32 in NCHW remains an option
// (fp32_nchw), tested and benchmarked beside it. The 3 input channels are zero-padded to 16 bytes
// of the element type (4 in FP32/TF32, 8 in FP16: what vectorised NHWC loads and tensor-core
// engines want), with C1's extra filter channels zero (inception_cuda_input_channels).
//
// Execution: launch(slot, n) is asynchronous: the slot's pinned input is uploaded on a copy stream
// (so it overlaps the previous batch's compute), the model's stream converts it into the network
// input, replays the CUDA graph captured for batch n (once per n, after one eager pass whose every
// op is synchronised and checked, so a fault names its layer and first-call set-up happens outside
// the capture) and downloads the bottleneck into the slot's pinned output; wait(slot) synchronises
// on that slot's event. forward() is launch(0) + wait(0) around two host copies; forward_eager()
// runs the same ops without a graph; forward_blocks() also hands each block output (stem,
// mixed0..mixed10) to a tap as an NHWC fp32 host tensor, for the tests against the PyTorch
// reference. With ENGINE_CUDA_SYNC_EACH_OP=1 in the environment (or options.sync_each_op) nothing
// is captured: every op runs eagerly, is synchronised and checked, and an error names its layer.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/conv2d_cudnn.h"
#include "models/inception_weights.h"

namespace engine {

struct InceptionCudaOptions {
  bool fp32_nchw = false;     // FP32 mode in NCHW (else NHWC); TF32 and FP16 are always NHWC
  int input_channels = 0;     // pad the 3 input channels to this many; 0: 16 bytes (4 or 8)
  bool sync_each_op = false;  // debug: no graphs, sync + check after each op (also by environment)
  ConvPlanOptions plan;       // engine choice per conv shape
  int device = 0;
};

// Channels of the network input as C1 sees it: `option` (>= c) when set, else c rounded up to 16
// bytes of the precision's element (FP32/TF32: 3 -> 4, FP16: 3 -> 8).
int64_t inception_cuda_input_channels(Precision p, int64_t c, int option);
// ENGINE_CUDA_SYNC_EACH_OP: unset, "" or "0" -> false, "1" -> true, anything else an Error naming
// the variable. The second reads the environment.
bool parse_cuda_sync_each_op(const char* value);
bool cuda_sync_each_op_from_env();

class InceptionV3Cuda {
 public:
  using Tap = std::function<void(const std::string& name, const Tensor& nhwc_fp32)>;
  struct LayerTime {
    std::string name;  // "conv C17 (conv2d_17) 1x1/1 ...", "mixed0 average_pooling2d_1",
                       // "mixed0 concat copy", ...: block, then the graph op's Keras name
    double ms = 0;     // mean over the profiled iterations
    double flops = 0;  // convs only
    int64_t engine = -1;
  };

  InceptionV3Cuda(const InceptionWeights& w, Precision precision, int64_t max_batch,
                  InceptionCudaOptions options = {});
  ~InceptionV3Cuda();
  InceptionV3Cuda(const InceptionV3Cuda&) = delete;
  InceptionV3Cuda& operator=(const InceptionV3Cuda&) = delete;

  // Double-buffered pinned host slots (slot 0 and 1), allocated once at construction.
  // A slot's buffers belong to the model from launch(slot) until wait(slot) returns; launching a
  // slot still in flight is an Error. Errors found while enqueuing (bad slot or batch, the checked
  // eager pass and capture of a batch size's first launch, a failed graph launch) are thrown by
  // launch itself.
  float* input_slot(int slot);  // pinned: max_batch x 299 x 299 x 3 floats (NHWC, [-1,1])
  const float* output_slot(int slot) const;  // pinned: max_batch x 2048 floats
  // Asynchronous on the model's stream: upload slot's first n images, replay the forward graph
  // for batch n (capturing it once per n, after one eager pass), download n bottlenecks into the
  // slot's output. Returns at once; the caller may fill the OTHER slot meanwhile.
  void launch(int slot, int64_t n);
  // Blocks until that slot's launch has finished (event sync); rethrows any CUDA error as an
  // engine::Error naming the call (and, with ENGINE_CUDA_SYNC_EACH_OP=1, the layer).
  void wait(int slot);

  // host_x: n x 299 x 299 x 3 floats; host_bottleneck: n x 2048 floats. 1 <= n <= max_batch.
  // Copy into slot 0, launch(0, n), wait(0), copy out.
  void forward(const float* host_x, int64_t n, float* host_bottleneck);  // CUDA graph
  // Asynchronous on stream(): the input convert and the graph for batch n on the input already on
  // the GPU (the last one uploaded); the bottleneck stays on the GPU. For benchmarks comparable
  // with PyTorch (input resident), timed with events on stream(). Needs no slot in flight.
  void replay(int64_t n);
  void forward_eager(const float* host_x, int64_t n, float* host_bottleneck);  // no graph
  void forward_blocks(const float* host_x, int64_t n, float* host_bottleneck, const Tap& tap);
  // Times every op (events around each, eager) on the current contents of the buffers.
  std::vector<LayerTime> profile_layers(int64_t n, int iters = 5);

  cudaStream_t stream() const;  // the model's (non-blocking) stream: every op runs on it
  bool sync_each_op() const;    // ENGINE_CUDA_SYNC_EACH_OP=1 or options.sync_each_op
  Precision precision() const;
  TensorLayout layout() const;
  int64_t max_batch() const;
  int64_t peak_device_bytes() const;  // everything this object cudaMalloc'ed, now
  int64_t activation_bytes() const;   // the arena
  int64_t workspace_bytes() const;
  int64_t weight_bytes() const;
  int64_t allocations() const;                // number of cudaMalloc calls so far
  double flops_per_image() const;             // 2*kh*kw*cin*cout*Ho*Wo over the 94 convs (unpadded)
  std::string plan_summary(int64_t n) const;  // one line per conv: engine, workspace, ms

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace engine
