// models/bottleneck_backend.cpp: the CPU backend and the checks of --device/--precision
// (declared in models/bottleneck_backend.h). The factory that may build the CUDA backend is in
// models/bottleneck_backends.cpp, so that this library (engine_core) never needs the CUDA code.
#include "models/bottleneck_backend.h"

#include "engine/bottleneck_cache.h"
#include "engine/inception_contract.h"

namespace engine {

BottleneckBackendCpu::BottleneckBackendCpu(const InceptionWeights& w, int64_t max_batch,
                                           bool batch_invariant, CpuPrecision precision,
                                           const Int8Calibration& calibration)
    : max_batch_(max_batch) {
  ENGINE_CHECK(max_batch >= 1, "BottleneckBackendCpu: max_batch must be >= 1, got ", max_batch);
  if (precision == CpuPrecision::FP32) {
    fp32_ = std::make_unique<InceptionV3Cpu>(w);
    fp32_->set_batch_invariant(batch_invariant);
  } else {
    lowp_ = std::make_unique<InceptionV3CpuLowp>(w, precision, calibration);
    lowp_->set_batch_invariant(batch_invariant);
    if (precision == CpuPrecision::INT8) calibration_images_ = calibration.images;
  }
  // Uninitialised: pages of a large batch are only touched (and counted) when images fill them.
  for (int s = 0; s < 2; ++s) {
    in_[s] = Tensor(Shape{max_batch, kInceptionInput, kInceptionInput, 3});
    out_[s] = Tensor(Shape{max_batch, kBottleneckSize});
  }
}

float* BottleneckBackendCpu::input(int slot) { return in_[slot & 1].data(); }
const float* BottleneckBackendCpu::output(int slot) const { return out_[slot & 1].data(); }

void BottleneckBackendCpu::launch(int slot, int64_t n) {
  ENGINE_CHECK(n >= 1 && n <= max_batch_, "BottleneckBackendCpu::launch: n = ", n, " outside [1, ",
               max_batch_, "]");
  const Tensor x =
      Tensor::view(in_[slot & 1].data(), Shape{n, kInceptionInput, kInceptionInput, 3});
  Tensor b = Tensor::view(out_[slot & 1].data(), Shape{n, kBottleneckSize});
  if (fp32_)
    fp32_->forward(x, b);
  else
    lowp_->forward(x, b);
}

std::string BottleneckBackendCpu::describe() const {
  if (fp32_) return "cpu fp32";
  std::string d = std::string("cpu ") + cpu_precision_name(lowp_->precision());
  if (lowp_->precision() == CpuPrecision::INT8)
    d += " (calibrated on " + std::to_string(calibration_images_) + " images)";
  return d;
}

bool is_cpu_only_precision(const std::string& p) { return p == "bf16" || p == "int8"; }
bool is_gpu_only_precision(const std::string& p) { return p == "tf32" || p == "fp16"; }

Device check_backend_request(const BackendRequest& r) {
  if (!is_feature_precision(r.precision) && r.precision != "auto")
    throw BackendUsageError("--precision: expected fp32, tf32, fp16, bf16, int8 or auto, got '" +
                            r.precision + "'");
  const bool gpu_only = is_gpu_only_precision(r.precision);
  if (r.device == "cpu" && gpu_only)
    throw BackendUsageError("--precision " + r.precision +
                            " runs on the GPU only (--device cuda or auto); the CPU computes fp32, "
                            "bf16 or int8");
  if (r.device == "cuda" && is_cpu_only_precision(r.precision))
    throw BackendUsageError("--precision " + r.precision +
                            " runs on the CPU only (--device cpu or auto); the GPU computes fp32, "
                            "tf32 or fp16");
  if (r.device == "auto" && is_cpu_only_precision(r.precision)) return Device::CPU;
  const Device d = resolve_device(r.device);  // --device cuda without a GPU: Error saying why
  if (d == Device::CPU && gpu_only)
    throw BackendUsageError("--precision " + r.precision +
                            " runs on the GPU only, and --device auto found none (" +
                            cuda_availability().reason + ")");
  return d;
}

std::string resolve_precision(const std::string& precision, Device d,
                              const std::function<void(const std::string&)>& note) {
  if (d != Device::CPU) return precision == "auto" ? "fp32" : precision;
  if (precision == "auto")
    return cpu_precision_unavailable(CpuPrecision::BF16).empty() ? "bf16" : "fp32";
  if (!is_cpu_only_precision(precision)) return precision;
  const std::string missing = cpu_precision_unavailable(parse_cpu_precision(precision));
  if (missing.empty()) return precision;
  if (note) note(missing + "; computing fp32 instead (exact)");
  return "fp32";
}

}  // namespace engine
