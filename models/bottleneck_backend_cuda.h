// models/bottleneck_backend_cuda.h: the GPU backend of models/bottleneck_backend.h (CUDA builds
// only; defined in models/bottleneck_backend_cuda.cpp, library engine_backends). Callers go
// through open_bottleneck_backend(), which picks it for --device cuda/auto.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "models/bottleneck_backend.h"

namespace engine {

// InceptionV3Cuda at `precision` ("fp32", "tf32", "fp16") for batches up to `batch`, lowered by
// halving when it does not fit the GPU's memory (one `note` says so); at batch 1 an Error names
// the free memory.
std::unique_ptr<BottleneckBackend> open_cuda_backend(
    const InceptionWeights& w, const std::string& precision, int64_t batch,
    const std::function<void(const std::string&)>& note);

}  // namespace engine
