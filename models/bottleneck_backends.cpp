// models/bottleneck_backends.cpp: open_bottleneck_backend (models/bottleneck_backend.h): the CPU
// backend, or in CUDA builds the GPU one (models/bottleneck_backend_cuda.h). Its own small
// library, engine_backends, so that engine_core and its tests never link the CUDA code.
#include "models/bottleneck_backend.h"

#ifdef ENGINE_HAVE_CUDA
#include "models/bottleneck_backend_cuda.h"
#endif

namespace engine {

std::unique_ptr<BottleneckBackend> open_bottleneck_backend(
    const InceptionWeights& w, const BackendRequest& r,
    const std::function<void(const std::string&)>& note) {
  const Device d = check_backend_request(r);
  // The tools resolve it first (the cache records it); idempotent for a resolved precision.
  const std::string precision = resolve_precision(r.precision, d, note);
#ifdef ENGINE_HAVE_CUDA
  if (d == Device::CUDA) return open_cuda_backend(w, precision, r.batch, note);
#else
  (void)note;
  ENGINE_CHECK(d == Device::CPU, "open_bottleneck_backend: a CPU-only build resolved --device ",
               r.device, " to the GPU");
#endif
  return std::make_unique<BottleneckBackendCpu>(w, r.batch, r.batch_invariant,
                                                parse_cpu_precision(precision), r.calibration);
}

}  // namespace engine
