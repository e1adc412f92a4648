// kernels/conv2d_cudnn.h: conv + bias + ReLU fused on the GPU through cuDNN's backend graph API
// (the legacy cudnnConvolutionForward path only reaches cuDNN's older kernels: 3-10x slower than
// PyTorch on Inception's 17x17 and 8x8 layers, measured in an earlier GPU session). One Conv2dCudnn
// per layer describes the operation graph CONVOLUTION_FORWARD (X, W -> virtual fp32) -> POINTWISE
// ADD (bias, 1xKx1x1 -> virtual fp32) -> POINTWISE RELU_FWD (-> Y), compute type fp32. For each
// input shape (N, H, W) it asks heuristics (CUDNN_HEUR_MODE_A, FALLBACK if A yields nothing usable)
// for engine configs, drops those whose numerical notes the precision forbids, finalizes the first
// `max_timed` that cuDNN accepts into execution plans, times them once with CUDA events (or keeps
// heuristic order when timing is off) and caches the winner per (N, H, W).
//
// Precisions (cudnn_engine_allowed, a pure function of the engine's numerical notes): FP32 is the
// exact mode: engines carrying CUDNN_NUMERICAL_NOTE_TENSOR_CORE, DOWN_CONVERT_INPUTS,
// REDUCED_PRECISION_REDUCTION, FFT or WINOGRAD are skipped (WINOGRAD can be allowed by option). As
// a second guard, run with NVIDIA_TF32_OVERRIDE=0 in the environment: the driver then refuses TF32
// in any library kernel. TF32 allows tensor-core engines on fp32 data but, as PyTorch's cuDNN v8
// filter does, not DOWN_CONVERT_INPUTS (fp32 inputs converted to fp16/bf16: 8 or 11 mantissa bits
// fewer than TF32's 10) nor REDUCED_PRECISION_REDUCTION (accumulation below fp32). FP16: half
// X/W/bias/Y, fp32 compute and fp32 virtual intermediates: REDUCED_PRECISION_REDUCTION (fp16
// accumulation) is refused. NONDETERMINISTIC is refused in every mode (graph replay must be bitwise
// repeatable). Layout (NHWC or NCHW
// strides; filters KRSC or KCRS to match) is a parameter; tensor dims are always [N, C, H, W].
//
// cuDNN takes symmetric pre-padding only here: a TF 'same' conv whose padding is asymmetric (even
// kernels, or stride > 1 'same') throws an engine::Error naming the layer instead of mis-padding.
// In Inception every stride-2 conv is 'valid' and every 'same' conv has an odd kernel at stride 1.
// Every cuDNN call is checked and names the layer; candidates cuDNN refuses (NOT_SUPPORTED at
// finalize or a failed timing run) are skipped, and when none is left the error lists them.
// Tests: tests/test_kernels_layers.cpp (Cuda/Conv2dKernel: every precision and layout vs
// Conv2dCpu), tests/test_inception_cuda.cpp (geometry errors, the engine filter on synthetic note
// sets, the whole net). Bench:
// bench/bench_kernels_cuda.cpp (conv2d/* rows, GFLOP/s), bench/bench_inception_cuda.cpp.
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "engine/cuda_resources.h"
#include "kernels/conv2d.h"

namespace engine {

enum class Precision { FP32, TF32, FP16 };
enum class TensorLayout { NHWC, NCHW };
const char* precision_name(Precision p);
const char* layout_name(TensorLayout l);
Precision parse_precision(const std::string& s);  // "fp32" | "tf32" | "fp16", else Error
inline size_t precision_bytes(Precision p) { return p == Precision::FP16 ? 2 : 4; }

// Move-only owner of one cudnnBackendDescriptor_t (a CudaOwner: destroyed with its owner).
class CudnnDescriptor
    : public CudaOwner<cudnnBackendDescriptor_t, cuda_release::CudnnBackendDescriptor> {
 public:
  CudnnDescriptor() = default;
  CudnnDescriptor(cudnnBackendDescriptorType_t type, const std::string& ctx);
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* value, const std::string& ctx);
  void finalize(const std::string& ctx);
};

// Padding a cuDNN conv gets: symmetric, from tf_padding; throws on an asymmetric 'same'.
struct CudnnConvGeometry {
  int64_t ho, wo, pad_h, pad_w;
};
CudnnConvGeometry cudnn_conv_geometry(int64_t h, int64_t w, const Conv2dSpec& spec,
                                      const std::string& name);

// Filter in the layout cuDNN reads for `layout`: NHWC -> KRSC (cout, kh, kw, cin); NCHW -> KCRS.
std::vector<float> conv_filter_for_cudnn(const std::vector<float>& w_hwio, int kh, int kw,
                                         int64_t cin, int64_t cout, TensorLayout layout);

// Whether an engine with these numerical notes may run a conv in precision `p` (see above).
bool cudnn_engine_allowed(const std::vector<cudnnBackendNumericalNote_t>& notes, Precision p,
                          bool allow_winograd_fp32);

struct ConvPlanOptions {
  bool time_plans = true;  // false: first usable config in heuristic order
  int max_timed = 4;       // candidates finalized and timed per shape
  int timing_iters = 3;    // timed runs per candidate (after one warm-up run)
  bool allow_winograd_fp32 = false;
  int64_t max_workspace = int64_t(1) << 30;  // candidates needing more are skipped
};

struct ConvPlanInfo {
  int64_t workspace = 0;      // bytes
  int64_t engine_index = -1;  // CUDNN_ATTR_ENGINE_GLOBAL_INDEX of the chosen engine
  int candidates = 0;         // heuristic configs that passed the numerical-note filter
  int finalized = 0;          // of those, plans cuDNN accepted
  float ms = -1;              // measured time of the chosen plan (-1: not timed)
};

class Conv2dCudnn {
 public:
  Conv2dCudnn(std::string name, int64_t cin, int64_t cout, const Conv2dSpec& spec,
              Precision precision, TensorLayout layout, ConvPlanOptions options = {});
  ~Conv2dCudnn();
  Conv2dCudnn(Conv2dCudnn&&) noexcept;
  Conv2dCudnn& operator=(Conv2dCudnn&&) noexcept;

  // Builds (once) and caches the plan for input (n, cin, h, w). Timing runs on the handle's
  // stream with the given buffers (their contents are overwritten: y only); a scratch workspace
  // is cudaMalloc'ed temporarily for timing. Not allowed while the stream is capturing.
  // ws_limit: candidates needing more workspace than this are skipped (< 0: options.max_workspace).
  const ConvPlanInfo& prepare(cudnnHandle_t handle, int64_t n, int64_t h, int64_t w, const void* x,
                              const void* filt, const void* bias, void* y, int64_t ws_limit = -1);
  bool prepared(int64_t n, int64_t h, int64_t w) const;
  // y = relu(conv(x, filt) + bias) on the handle's stream. The plan must have been prepared;
  // workspace must hold at least info(n, h, w).workspace bytes.
  void forward(cudnnHandle_t handle, int64_t n, int64_t h, int64_t w, const void* x,
               const void* filt, const void* bias, void* y, void* workspace,
               int64_t workspace_bytes) const;
  const ConvPlanInfo& info(int64_t n, int64_t h, int64_t w) const;

  const std::string& name() const { return name_; }
  int64_t cin() const { return cin_; }
  int64_t cout() const { return cout_; }
  const Conv2dSpec& spec() const { return spec_; }
  Precision precision() const { return precision_; }
  TensorLayout layout() const { return layout_; }
  double flops(int64_t n, int64_t h, int64_t w) const;  // 2*kh*kw*cin*cout*N*Ho*Wo

  struct Plan;  // descriptors kept alive with their execution plan (defined in the .cu)

 private:
  std::string name_;
  int64_t cin_, cout_;
  Conv2dSpec spec_;
  Precision precision_;
  TensorLayout layout_;
  ConvPlanOptions options_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
};

}  // namespace engine
