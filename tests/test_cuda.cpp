// tests/test_cuda.cpp: the CUDA/cuDNN/cuBLAS check macros, device selection and the RAII owners
// of engine/cuda_resources.h. The message
// tests need no GPU (the libraries name their error codes without a device); tests that need a
// device skip with the printed reason when none is present (CI), and run on the GPU machine.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "test_util.h"
#ifdef ENGINE_HAVE_CUDA
#include "engine/cuda_check.h"
#include "engine/cuda_resources.h"
#endif

using namespace engine;

TEST(DeviceSelection, CpuAlwaysWorksAndBadFlagIsAnError) {
  EXPECT_EQ(resolve_device("cpu"), Device::CPU);
  try {
    resolve_device("gpu0");
    FAIL() << "bad --device accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected cpu, cuda or auto, got 'gpu0'"),
              std::string::npos);
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
    EXPECT_NE(m.find("layer conv C7: cudaErrorInvalidValue failed: cudaErrorInvalidValue"),
              std::string::npos)
        << m;
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
    EXPECT_NE(std::string(e.what()).find(
                  "head dense1: CUBLAS_STATUS_INVALID_VALUE failed: CUBLAS_STATUS_INVALID_VALUE"),
              std::string::npos)
        << e.what();
  }
}

TEST(CudaCheck, RealCallOnTheDevice) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  DeviceBuffer<char> buf(1 << 20, "test buffer");
  CUDA_CHECK(cudaMemset(buf.data(), 0, 1 << 20), "test buffer");
  buf.reset();
  // Asking for far more memory than any card has must give the one-line error, not a crash.
  try {
    DeviceBuffer<char> huge(size_t(1) << 50, "huge buffer");
    FAIL() << "a 1 PiB cudaMalloc succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge buffer: cudaMalloc"), std::string::npos) << e.what();
  }
}

// The owners of engine/cuda_resources.h without a device: empty when default-made, and a move
// leaves the source empty (so it releases nothing twice).
TEST(CudaResources, EmptyOwnersAndMovesNeedNoDevice) {
  CudaStream s;
  CudaEvent e;
  CublasHandle b;
  CudnnHandle d;
  CudaGraph g;
  CudaGraphExec x;
  EXPECT_FALSE(s || e || b || d || g || x);
  DeviceBuffer<float> buf;
  EXPECT_FALSE(buf);
  EXPECT_EQ(buf.size(), 0u);
  EXPECT_EQ(buf.data(), nullptr);
  DeviceBuffer<float> moved(std::move(buf));
  EXPECT_FALSE(moved);
  PinnedBuffer<int> pin;
  EXPECT_EQ(pin.data(), nullptr);
}

TEST(CudaResources, BufferRoundTripOnAStreamWithEvents) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  const CudaStream s = CudaStream::create("test");
  std::vector<float> host(1000), back(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(i) * 0.5f;
  DeviceBuffer<float> a(host.size(), "test a");
  a.upload(host.data(), host.size(), s, "test upload");
  DeviceBuffer<float> b = std::move(a);  // the allocation moves, `a` is empty
  EXPECT_FALSE(a);
  EXPECT_EQ(a.size(), 0u);
  const CudaEvent e = CudaEvent::create("test");
  b.download(back.data(), back.size(), s, "test download");
  CUDA_CHECK(cudaEventRecord(e, s), "test");
  CUDA_CHECK(cudaEventSynchronize(e), "test");
  EXPECT_EQ(back, host);
  EXPECT_THROW(b.upload(host.data(), host.size() + 1, s, "test overflow"), Error);
}
#endif
