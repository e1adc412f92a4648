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
// Implementations: BottleneckBackendCpu (here, over InceptionV3Cpu in fp32, InceptionV3CpuLowp in
// bf16 and int8) and, in CUDA builds,
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
#include "models/inception_v3_lowp.h"
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
// batch_invariant: set_batch_invariant of the network (extract: a resumed run is bit-identical).
// FP32 runs the exact InceptionV3Cpu; BF16/INT8 run InceptionV3CpuLowp (INT8 with `calibration`),
// which throws when the CPU lacks the instructions (the tools fall back to fp32 before, saying so).
class BottleneckBackendCpu : public BottleneckBackend {
 public:
  BottleneckBackendCpu(const InceptionWeights& w, int64_t max_batch, bool batch_invariant,
                       CpuPrecision precision = CpuPrecision::FP32,
                       const Int8Calibration& calibration = {});
  int64_t max_batch() const override { return max_batch_; }
  float* input(int slot) override;
  const float* output(int slot) const override;
  void launch(int slot, int64_t n) override;
  void wait(int) override {}
  std::string describe() const override;  // "cpu bf16", "cpu int8 (calibrated on 32 images)"

 private:
  std::unique_ptr<InceptionV3Cpu> fp32_;      // FP32
  std::unique_ptr<InceptionV3CpuLowp> lowp_;  // BF16, INT8
  int64_t max_batch_, calibration_images_ = 0;
  Tensor in_[2], out_[2];
};

struct BackendRequest {
  std::string device = "auto";  // --device: cpu | cuda | auto (resolve_device)
  // --precision: fp32 | tf32 | fp16 (GPU) | bf16 | int8 (CPU) | auto (resolve_precision: the
  // tools resolve it, and a CPU precision this CPU lacks, before open_bottleneck_backend).
  std::string precision = "fp32";
  Int8Calibration calibration;   // int8 only: the activation ranges (models/inception_v3_lowp.h)
  int64_t batch = 32;            // wanted max batch; the GPU may lower it (see `notes`)
  bool batch_invariant = false;  // CPU only (see BottleneckBackendCpu)
};

// The precisions of --precision and where they run.
bool is_cpu_only_precision(const std::string& p);  // bf16, int8
bool is_gpu_only_precision(const std::string& p);  // tf32, fp16

// A usage error found before any work (--precision fp16 on the CPU): the tools print its one
// line and exit 2.
struct BackendUsageError : Error {
  using Error::Error;
};

// Resolves --device and checks --precision first (cheap, before any weights are read): throws
// BackendUsageError for a precision the device cannot give (tf32/fp16 on the CPU, bf16/int8 with
// --device cuda) and Error for --device cuda without a usable GPU. Returns the device the backend
// will run on: --device auto with bf16 or int8 is the CPU (only it has them).
Device check_backend_request(const BackendRequest& r);

// The precision a run on `d` computes in, for a checked --precision:
//   auto: the GPU fp32 (its reduced modes are not verified on a device yet); the CPU bf16 when it
//         has the instructions natively (about twice fp32's speed, bottleneck cosine >= 0.9999),
//         else fp32. tools/extract first replaces auto by an existing cache's precision.
//   bf16/int8 on a CPU without the instructions: fp32, and `note` gets one line saying what is
//         missing (cpu_precision_unavailable): never a slow emulation without saying so.
//   anything else: itself.
std::string resolve_precision(const std::string& precision, Device d,
                              const std::function<void(const std::string&)>& note);

// The backend for `r`. `note` receives one line per decision the user should know about (a batch
// lowered to fit the GPU's memory).
std::unique_ptr<BottleneckBackend> open_bottleneck_backend(
    const InceptionWeights& w, const BackendRequest& r,
    const std::function<void(const std::string&)>& note);

}  // namespace engine
