// engine/cuda_device.cpp: device detection (see cuda_device.h) and, in CUDA builds, the error
// formatting behind the check macros of cuda_check.h.
#include "engine/cuda_device.h"

#include "engine/error.h"

#ifdef ENGINE_HAVE_CUDA
#include "engine/cuda_check.h"
#endif

namespace engine {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

#ifdef ENGINE_HAVE_CUDA
void throw_cuda_error(cudaError_t e, const char* stmt, const char* file, int line,
                      const std::string& ctx) {
  fail(ctx, ": ", stmt, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") at ",
       file, ":", line);
}

void throw_cudnn_error(cudnnStatus_t s, const char* stmt, const char* file, int line,
                       const std::string& ctx) {
  char detail[512] = "";
  cudnnGetLastErrorString(detail, sizeof detail);
  fail(ctx, ": ", stmt, " failed: ", cudnnGetErrorString(s), detail[0] ? " (" : "", detail,
       detail[0] ? ")" : "", " at ", file, ":", line);
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

void throw_cublas_error(cublasStatus_t s, const char* stmt, const char* file, int line,
                        const std::string& ctx) {
  fail(ctx, ": ", stmt, " failed: ", cublas_status_name(s), " at ", file, ":", line);
}

CudaAvailability cuda_availability() {
  CudaAvailability a;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    a.reason = std::string("no usable CUDA device: cudaGetDeviceCount: ") + cudaGetErrorName(e) +
               " (" + cudaGetErrorString(e) + ")";
    return a;
  }
  if (n == 0) {
    a.reason = "no CUDA device present";
    return a;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    cudaGetLastError();
    a.reason = "cudaGetDeviceProperties failed for device 0";
    return a;
  }
  a.devices = n;
  a.reason = std::string(p.name) + ", " + std::to_string(p.totalGlobalMem >> 20) + " MiB";
  return a;
}
#else
CudaAvailability cuda_availability() {
  return {0, "built without CUDA (nvcc not found at configure time)"};
}
#endif

Device resolve_device(const std::string& flag) {
  if (flag == "cpu") return Device::CPU;
  if (flag != "cuda" && flag != "auto")
    fail("--device: expected cpu, cuda or auto, got '", flag, "'");
  CudaAvailability a = cuda_availability();
  if (a.devices > 0) return Device::CUDA;
  if (flag == "cuda") fail("--device cuda: ", a.reason);
  return Device::CPU;
}

}  // namespace engine
