// engine/cuda_device.h: which device the engine runs on. Safe to call on machines without a GPU
// or without a driver (it then reports zero devices and the reason), and in CPU-only builds.
// `--device cpu|cuda|auto` in the tools resolves through resolve_device(). Device names where
// the work runs; data does not carry it (Tensor is host memory, engine/tensor.h).
#pragma once
#include <string>

namespace engine {

enum class Device { CPU, CUDA };
const char* device_name(Device d);  // "cpu" / "cuda"

struct CudaAvailability {
  int devices = 0;
  std::string reason;  // why there is no usable GPU, or the first device's name and memory
};
CudaAvailability cuda_availability();

// "cpu" -> CPU; "cuda" -> CUDA or an Error saying why not; "auto" -> CUDA when available, else CPU.
// Anything else is an Error naming the flag.
Device resolve_device(const std::string& flag);

}  // namespace engine
