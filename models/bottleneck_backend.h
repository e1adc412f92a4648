// models/bottleneck_backend.h: the one interface through which tools/extract and tools/predict
// run Inception v3 (models/extract_pipeline.h drives it): batches of preprocessed images
// (N x 299 x 299 x 3, [-1, 1], NHWC) in, N x 2048 bottlenecks out, through two host slots so that
// the caller fills one while the network works on the other.
//
//   float* in = b.input(slot);      // fill n images
//   b.launch(slot, n);              // the CPU computes here; the GPU only queues the work
//   ... fill the other slot ...
//   b.wait(slot);                   // the GPU's errors surface here, naming the call
//   use(b.output(slot));            // n x 2048
//
// Implementations: BottleneckBackendCpu (here, over InceptionV3Cpu) and, in CUDA builds,
// models/bottleneck_backend_cuda.cpp over InceptionV3Cuda (pinned slots, one stream, CUDA graphs).
// open_bottleneck_backend() picks one for --device/--precision; it is defined in
// models/bottleneck_backends.cpp (library engine_backends, which links the CUDA code only when
// the build has it). Tests: tests/test_extract_pipeline.cpp (CPU), tests/test_extract.cpp and
// tests/test_predict.cpp (--device cuda vs cpu, skipped without a GPU).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "models/inception_v3.h"
#include "models/inception_weights.h"

namespace engine {

class BottleneckBackend {
 public:
  virtual ~BottleneckBackend() = default;
  virtual int64_t max_batch() const = 0;
  virtual float* input(int slot) = 0;               // max_batch x 299 x 299 x 3 floats
  virtual const float* output(int slot) const = 0;  // max_batch x 2048 floats
  virtual void launch(int slot, int64_t n) = 0;     // 1 <= n <= max_batch
  virtual void wait(int slot) = 0;                  // rethrows the slot's error, if any
  virtual std::string describe() const = 0;         // "cpu fp32", "cuda tf32 (NVIDIA H100 ...)"
};

// The CPU backend: launch() runs the forward pass before it returns (the CPU has no other worker
// to hand it to; decoding goes on in the pipeline's threads meanwhile), wait() does nothing.
// batch_invariant: InceptionV3Cpu::set_batch_invariant (extract: a resumed run is bit-identical).
class BottleneckBackendCpu : public BottleneckBackend {
 public:
  BottleneckBackendCpu(const InceptionWeights& w, int64_t max_batch, bool batch_invariant);
  int64_t max_batch() const override { return max_batch_; }
  float* input(int slot) override;
  const float* output(int slot) const override;
  void launch(int slot, int64_t n) override;
  void wait(int) override {}
  std::string describe() const override { return "cpu fp32"; }

 private:
  InceptionV3Cpu model_;
  int64_t max_batch_;
  Tensor in_[2], out_[2];
};

struct BackendRequest {
  std::string device = "auto";     // --device: cpu | cuda | auto (resolve_device)
  std::string precision = "fp32";  // --precision: fp32 | tf32 | fp16 (CPU: fp32 only)
  int64_t batch = 32;              // wanted max batch; the GPU may lower it (see `notes`)
  bool batch_invariant = false;    // CPU only (see BottleneckBackendCpu)
};

// A usage error found before any work (--precision fp16 on the CPU): the tools print its one
// line and exit 2.
struct BackendUsageError : Error {
  using Error::Error;
};

// Resolves --device and checks --precision first (cheap, before any weights are read): throws
// BackendUsageError for a precision the device cannot give and Error for --device cuda without a
// usable GPU. Returns the device the backend will run on.
Device check_backend_request(const BackendRequest& r);

// The backend for `r`. `note` receives one line per decision the user should know about (a batch
// lowered to fit the GPU's memory).
std::unique_ptr<BottleneckBackend> open_bottleneck_backend(
    const InceptionWeights& w, const BackendRequest& r,
    const std::function<void(const std::string&)>& note);

}  // namespace engine
