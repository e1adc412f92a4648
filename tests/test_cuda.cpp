// tests/test_cuda.cpp: the CUDA/cuDNN/cuBLAS check macros and device selection. The message
// tests need no GPU (the libraries name their error codes without a device); tests that need a
// device skip with the printed reason when none is present (CI), and run on the GPU machine.
#include <gtest/gtest.h>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "test_util.h"
#ifdef ENGINE_HAVE_CUDA
#include "engine/cuda_check.h"
#endif

using namespace engine;

TEST(DeviceSelection, CpuAlwaysWorksAndBadFlagIsAnError) {
  EXPECT_EQ(resolve_device("cpu"), Device::CPU);
  try {
    resolve_device("gpu0");
    FAIL() << "bad --device accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected cpu, cuda or auto, got 'gpu0'"), std::string::npos);
  }
}

TEST(DeviceSelection, AutoFallsBackAndCudaExplainsWhenNoGpu) {
  CudaAvailability a = cuda_availability();
  std::printf("  CUDA: %d device(s): %s\n", a.devices, a.reason.c_str());
  if (a.devices > 0) {
    EXPECT_EQ(resolve_device("auto"), Device::CUDA);
    EXPECT_EQ(resolve_device("cuda"), Device::CUDA);
    return;
  }
  EXPECT_FALSE(a.reason.empty());
  EXPECT_EQ(resolve_device("auto"), Device::CPU);
  try {
    resolve_device("cuda");
    FAIL() << "--device cuda accepted without a GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda: "), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

#ifdef ENGINE_HAVE_CUDA
TEST(CudaCheck, MessagesNameTheCallTheErrorAndTheContext) {
  try {
    CUDA_CHECK(cudaErrorInvalidValue, "layer conv C7");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("layer conv C7: cudaErrorInvalidValue failed: cudaErrorInvalidValue"), std::string::npos) << m;
    EXPECT_NE(m.find("test_cuda.cpp:"), std::string::npos) << m;
  }
  try {
    CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM, "layer conv C8");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDNN_STATUS_BAD_PARAM"), std::string::npos) << e.what();
  }
  try {
    CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE, "head dense1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dense1: CUBLAS_STATUS_INVALID_VALUE failed: CUBLAS_STATUS_INVALID_VALUE"),
              std::string::npos) << e.what();
  }
}

TEST(CudaCheck, RealCallOnTheDevice) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, 1 << 20), "test buffer");
  CUDA_CHECK(cudaMemset(p, 0, 1 << 20), "test buffer");
  CUDA_CHECK(cudaFree(p), "test buffer");
  // Asking for far more memory than any card has must give the one-line error, not a crash.
  EXPECT_THROW(CUDA_CHECK(cudaMalloc(&p, size_t(1) << 50), "huge buffer"), Error);
}
#endif
