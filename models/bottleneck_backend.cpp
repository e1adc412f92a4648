// models/bottleneck_backend.cpp: the CPU backend and the checks of --device/--precision
// (declared in models/bottleneck_backend.h). The factory that may build the CUDA backend is in
// models/bottleneck_backends.cpp, so that this library (engine_core) never needs the CUDA code.
#include "models/bottleneck_backend.h"

#include "engine/bottleneck_cache.h"
#include "engine/inception_contract.h"

namespace engine {

BottleneckBackendCpu::BottleneckBackendCpu(const InceptionWeights& w, int64_t max_batch,
                                           bool batch_invariant)
    : model_(w), max_batch_(max_batch) {
  ENGINE_CHECK(max_batch >= 1, "BottleneckBackendCpu: max_batch must be >= 1, got ", max_batch);
  model_.set_batch_invariant(batch_invariant);
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
  model_.forward(x, b);
}

Device check_backend_request(const BackendRequest& r) {
  if (!is_feature_precision(r.precision))
    throw BackendUsageError("--precision: expected fp32, tf32 or fp16, got '" + r.precision + "'");
  if (r.device == "cpu" && r.precision != "fp32")
    throw BackendUsageError("--precision " + r.precision +
                            " runs on the GPU only (--device cuda or auto); the CPU computes fp32");
  const Device d = resolve_device(r.device);  // --device cuda without a GPU: Error saying why
  if (d == Device::CPU && r.precision != "fp32")
    throw BackendUsageError("--precision " + r.precision +
                            " runs on the GPU only, and --device auto found none (" +
                            cuda_availability().reason + ")");
  return d;
}

}  // namespace engine
