// engine/cuda_check.h: checks for every CUDA runtime, cuDNN and cuBLAS call. A failing call
// throws engine::Error with the statement, the library's error name and message, file:line and
// a context string (the layer or buffer it was for), e.g.
//   CUDA_CHECK(cudaMalloc(&p, n), "activation arena");
//   CUDNN_CHECK(cudnnBackendFinalize(plan), layer_name);
// KERNEL_LAUNCH_CHECK(ctx) after every kernel launch catches launch-configuration errors.
// Only included by CUDA translation units and by code built when ENGINE_HAVE_CUDA is defined.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "engine/error.h"

namespace engine {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* stmt, const char* file, int line,
                                   const std::string& ctx);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t s, const char* stmt, const char* file, int line,
                                    const std::string& ctx);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* stmt, const char* file, int line,
                                     const std::string& ctx);
const char* cublas_status_name(cublasStatus_t s);

}  // namespace engine

#define CUDA_CHECK(stmt, ctx)                                                  \
  do {                                                                         \
    cudaError_t engine_e_ = (stmt);                                            \
    if (engine_e_ != cudaSuccess)                                              \
      ::engine::throw_cuda_error(engine_e_, #stmt, __FILE__, __LINE__, (ctx)); \
  } while (0)

#define CUDNN_CHECK(stmt, ctx)                                                  \
  do {                                                                          \
    cudnnStatus_t engine_s_ = (stmt);                                           \
    if (engine_s_ != CUDNN_STATUS_SUCCESS)                                      \
      ::engine::throw_cudnn_error(engine_s_, #stmt, __FILE__, __LINE__, (ctx)); \
  } while (0)

#define CUBLAS_CHECK(stmt, ctx)                                                  \
  do {                                                                           \
    cublasStatus_t engine_s_ = (stmt);                                           \
    if (engine_s_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::engine::throw_cublas_error(engine_s_, #stmt, __FILE__, __LINE__, (ctx)); \
  } while (0)

#define KERNEL_LAUNCH_CHECK(ctx) CUDA_CHECK(cudaGetLastError(), (ctx))
