// models/inception_v3_lowp.h: Inception v3 on the CPU in reduced precision, the same graph
// (models/inception_graph.h) as the exact fp32 InceptionV3Cpu, executed by oneDNN primitives:
//   BF16: bf16 activations and weights, fp32 accumulation, fp32 bias; bf16 pools; the
//         bottleneck (global average) accumulated in fp32. Needs AVX512_BF16 or AMX.
//   INT8: u8 activations (every tensor after the input is post-ReLU, so >= 0) with one scale per
//         tensor, s8 weights with one scale per output channel, s32 accumulation, the input
//         image in s8 (scale 1/127: it lies in [-1, 1]); per-tensor activation ranges come from
//         an Int8Calibration measured on a sample of the user's images (calibrate_int8). Needs
//         AVX512_VNNI, AVX_VNNI or AMX.
// Both keep the fp32 executor's structure (micro-batches of one image, one per thread, pooled
// activations) and its batch-invariant mode, so an image's bottleneck does not depend on its
// batch (tools/extract's bit-identical resume). Each primitive's oneDNN implementation is checked
// when it is created: a 'ref' (slow, emulated) kernel is an error naming the layer, never a
// silent 10x slowdown.
// The CPU's support is read from oneDNN's effective ISA, so DNNL_MAX_CPU_ISA=AVX512_CORE makes
// a bf16/VNNI machine behave like one without (the tests use this).
// Tests: tests/test_inception_lowp.cpp (fidelity against the PyTorch float64 reference, batch
// invariance, calibration round trip). Bench: bench/bench_inception.cpp (--precision).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/inception_weights.h"

namespace engine {

enum class CpuPrecision { FP32, BF16, INT8 };
const char* cpu_precision_name(CpuPrecision p);  // "fp32", "bf16", "int8"
// "fp32" | "bf16" | "int8" -> the enum; anything else throws Error.
CpuPrecision parse_cpu_precision(const std::string& s);

// "" when this CPU runs `p` with native instructions; else one line saying what is missing,
// e.g. "bf16 needs AVX512_BF16 or AMX; oneDNN reports avx512_core on this CPU". FP32: always "".
std::string cpu_precision_unavailable(CpuPrecision p);
std::string cpu_isa_name();  // oneDNN's effective ISA, e.g. "avx512_core_bf16"

// Per-tensor activation ranges for INT8, measured with the exact fp32 network.
struct Int8Calibration {
  // One value per tensor of inception_v3_graph(), indexed by tensor id: the largest value seen
  // (the input tensor: the largest |x|). Scales follow: a u8 tensor holds round(v * 255 / max).
  std::vector<float> max;
  int64_t images = 0;  // how many images the ranges were measured on
  bool empty() const { return max.empty(); }
  // One line of text, stable across machines (%.9g): "int8-minmax-v1 images=32 input_1=1
  // activation_1=3.25 ...". Stored in the cache's settings and the head file; compared as text.
  std::string serialize() const;
  // The inverse; a malformed or foreign string throws Error naming `where` and the reason.
  static Int8Calibration parse(const std::string& text, const std::string& where);
};

// Runs the fp32 network over `images` (N x 299 x 299 x 3, [-1, 1]) and records every tensor's
// range. N >= 1; more images give steadier ranges (tools/extract uses up to 32).
Int8Calibration calibrate_int8(const InceptionWeights& w, const Tensor& images);

class InceptionV3CpuLowp {
 public:
  // precision BF16 or INT8 (FP32: use InceptionV3Cpu). INT8 needs a non-empty calibration.
  // Throws Error when the CPU lacks the instructions (cpu_precision_unavailable's line).
  InceptionV3CpuLowp(const InceptionWeights& w, CpuPrecision precision,
                     const Int8Calibration& calibration = {}, int64_t micro_batch = 1);
  ~InceptionV3CpuLowp();
  InceptionV3CpuLowp(const InceptionV3CpuLowp&) = delete;
  InceptionV3CpuLowp& operator=(const InceptionV3CpuLowp&) = delete;

  // x: (N, 299, 299, 3) fp32 in [-1, 1]; bottleneck: (N, 2048) fp32, preallocated.
  // The tap, when given, sees every op's output converted back to fp32 (bf16 widened, int8
  // times its scale) under the tensor's graph name, images [first, first + t.n()); for tests
  // and for finding the layer where an error grows. Taps are serialised.
  using Tap = std::function<void(const std::string& name, const Tensor& t, int64_t first)>;
  void forward(const Tensor& x, Tensor& bottleneck, const Tap& tap = {});
  void set_batch_invariant(bool on);
  CpuPrecision precision() const;
  double flops_per_image() const;  // the same count as fp32 (multiply-adds x 2)
  int64_t activation_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace engine
