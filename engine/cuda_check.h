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

// One body for the three checks: `text` is the statement stringified by the caller macro, before
// any macro inside it is expanded, so the error shows the call as written at the call site.
#define ENGINE_STATUS_CHECK_(Status, ok, thrower, stmt, text, ctx)                        \
  do {                                                                                    \
    Status engine_s_ = (stmt);                                                            \
    if (engine_s_ != (ok)) ::engine::thrower(engine_s_, text, __FILE__, __LINE__, (ctx)); \
  } while (0)

#define CUDA_CHECK(stmt, ctx) \
  ENGINE_STATUS_CHECK_(cudaError_t, cudaSuccess, throw_cuda_error, stmt, #stmt, ctx)
#define CUDNN_CHECK(stmt, ctx) \
  ENGINE_STATUS_CHECK_(cudnnStatus_t, CUDNN_STATUS_SUCCESS, throw_cudnn_error, stmt, #stmt, ctx)
#define CUBLAS_CHECK(stmt, ctx) \
  ENGINE_STATUS_CHECK_(cublasStatus_t, CUBLAS_STATUS_SUCCESS, throw_cublas_error, stmt, #stmt, ctx)

#define KERNEL_LAUNCH_CHECK(ctx) CUDA_CHECK(cudaGetLastError(), (ctx))
