// engine/cuda_resources.h: the one set of move-only RAII owners for GPU memory and handles
// (tiny-cuda-nn's GPUMemory<T> habit): DeviceBuffer<T> (cudaMalloc), PinnedBuffer<T>
// (cudaMallocHost), CudaStream (non-blocking), CudaEvent, CudaGraph + CudaGraphExec, CublasHandle,
// CudnnHandle, and the release of kernels/conv2d_cudnn.h's CudnnDescriptor. Every create is
// checked with the context string naming its owner (layer, buffer); destructors release without
// throwing. Nothing else in the engine calls cudaFree, cudaFreeHost, cudaStreamDestroy,
// cudaEventDestroy, cudaGraph*Destroy, cublasDestroy, cudnnDestroy or
// cudnnBackendDestroyDescriptor.
//
// Destruction order: C++ destroys members in reverse order of declaration, so an owner declares
// what others depend on FIRST: the stream, then the cuDNN/cuBLAS handle, then the plans and
// descriptors bound to the handle, then buffers and graphs that reference them. Declared that
// way, the handle outlives every plan bound to it by construction.
// Only included by CUDA translation units and code built when ENGINE_HAVE_CUDA is defined.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "engine/cuda_check.h"

namespace engine {

// A move-only owner of one handle `H` released by `Release{}(h)` when not null.
template <typename H, typename Release>
class CudaOwner {
 public:
  CudaOwner() = default;
  explicit CudaOwner(H h) : h_(h) {}
  ~CudaOwner() { reset(); }
  CudaOwner(CudaOwner&& o) noexcept : h_(std::exchange(o.h_, H{})) {}
  CudaOwner& operator=(CudaOwner&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, H{});
    }
    return *this;
  }
  CudaOwner(const CudaOwner&) = delete;
  CudaOwner& operator=(const CudaOwner&) = delete;
  H get() const { return h_; }
  operator H() const { return h_; }  // NOLINT: pass straight to the C APIs
  explicit operator bool() const { return h_ != H{}; }
  void reset() {
    if (h_ != H{}) Release{}(h_);
    h_ = H{};
  }
  H release() { return std::exchange(h_, H{}); }

 protected:
  // A `Derived` (a CudaOwner that adds only its create()) owning `h`.
  template <typename Derived>
  static Derived adopt(H h) {
    Derived r;
    static_cast<CudaOwner&>(r) = CudaOwner(h);
    return r;
  }

 private:
  H h_{};
};

namespace cuda_release {
// The release functor of a CudaOwner: calls the library's destroy function on the handle (its
// status is ignored: destructors never throw).
template <auto Destroy>
struct With {
  template <typename H>
  void operator()(H h) const {
    Destroy(h);
  }
};
using Stream = With<cudaStreamDestroy>;
using Event = With<cudaEventDestroy>;
using Graph = With<cudaGraphDestroy>;
using GraphExec = With<cudaGraphExecDestroy>;
using Cublas = With<cublasDestroy>;
using Cudnn = With<cudnnDestroy>;
using CudnnBackendDescriptor = With<cudnnBackendDestroyDescriptor>;  // conv2d_cudnn.h
using DeviceMem = With<cudaFree>;
using PinnedMem = With<cudaFreeHost>;
}  // namespace cuda_release

class CudaStream : public CudaOwner<cudaStream_t, cuda_release::Stream> {
 public:
  CudaStream() = default;
  // A non-blocking stream: never synchronises with the legacy default stream, so every copy,
  // memset and kernel of its owner must be issued on it explicitly.
  static CudaStream create(const std::string& ctx) {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), ctx + " stream");
    return adopt<CudaStream>(s);
  }
};

class CudaEvent : public CudaOwner<cudaEvent_t, cuda_release::Event> {
 public:
  CudaEvent() = default;
  static CudaEvent create(const std::string& ctx, unsigned flags = cudaEventDefault) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, flags), ctx + " event");
    return adopt<CudaEvent>(e);
  }
};

using CudaGraph = CudaOwner<cudaGraph_t, cuda_release::Graph>;
using CudaGraphExec = CudaOwner<cudaGraphExec_t, cuda_release::GraphExec>;

class CublasHandle : public CudaOwner<cublasHandle_t, cuda_release::Cublas> {
 public:
  CublasHandle() = default;
  static CublasHandle create(const std::string& ctx) {
    cublasHandle_t h = nullptr;
    CUBLAS_CHECK(cublasCreate(&h), ctx + " cuBLAS handle");
    return adopt<CublasHandle>(h);
  }
};

class CudnnHandle : public CudaOwner<cudnnHandle_t, cuda_release::Cudnn> {
 public:
  CudnnHandle() = default;
  static CudnnHandle create(const std::string& ctx) {
    cudnnHandle_t h = nullptr;
    CUDNN_CHECK(cudnnCreate(&h), ctx + " cuDNN handle");
    return adopt<CudnnHandle>(h);
  }
};

// Where a CudaBuffer lives: each policy allocates with its own checked call (the statement text
// in an error names cudaMalloc or cudaMallocHost) and frees with the matching release.
namespace cuda_memory {
struct Device {
  template <typename T>
  static void* allocate(size_t count, const std::string& ctx) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, count ? count * sizeof(T) : 1), ctx);
    return p;
  }
  using Release = cuda_release::DeviceMem;
};
struct Pinned {
  template <typename T>
  static void* allocate(size_t count, const std::string& ctx) {
    void* p = nullptr;
    CUDA_CHECK(cudaMallocHost(&p, count ? count * sizeof(T) : 1), ctx);
    return p;
  }
  using Release = cuda_release::PinnedMem;
};
}  // namespace cuda_memory

// `count` elements of T in the memory `Memory` allocates (one byte when count is 0, so data() is
// never null for a live buffer). Contents are uninitialised. Moved-from buffers are empty (size
// 0, data() null), like a reset one.
template <typename T, typename Memory>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  CudaBuffer(size_t count, const std::string& ctx)
      : mem_(Memory::template allocate<T>(count, ctx)), count_(count) {}
  CudaBuffer(CudaBuffer&& o) noexcept
      : mem_(std::move(o.mem_)), count_(std::exchange(o.count_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& o) noexcept {
    mem_ = std::move(o.mem_);
    count_ = std::exchange(o.count_, 0);
    return *this;
  }
  T* data() const { return static_cast<T*>(mem_.get()); }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  explicit operator bool() const { return static_cast<bool>(mem_); }
  void reset() {
    mem_.reset();
    count_ = 0;
  }

 private:
  CudaOwner<void*, typename Memory::Release> mem_;
  size_t count_ = 0;
};

// `count` elements of T in device memory (cudaMalloc), with stream-ordered transfers.
template <typename T>
class DeviceBuffer : public CudaBuffer<T, cuda_memory::Device> {
 public:
  using CudaBuffer<T, cuda_memory::Device>::CudaBuffer;
  // Stream-ordered copies and memset (the owner's stream; never the legacy default stream).
  void upload(const T* host, size_t count, cudaStream_t s, const std::string& ctx) const {
    check_count(count, ctx);
    CUDA_CHECK(cudaMemcpyAsync(this->data(), host, count * sizeof(T), cudaMemcpyHostToDevice, s),
               ctx);
  }
  void download(T* host, size_t count, cudaStream_t s, const std::string& ctx) const {
    check_count(count, ctx);
    CUDA_CHECK(cudaMemcpyAsync(host, this->data(), count * sizeof(T), cudaMemcpyDeviceToHost, s),
               ctx);
  }
  void zero(cudaStream_t s, const std::string& ctx) const {
    CUDA_CHECK(cudaMemsetAsync(this->data(), 0, this->bytes(), s), ctx);
  }

 private:
  void check_count(size_t count, const std::string& ctx) const {
    if (count > this->size())
      fail(ctx, ": copy of ", count, " elements into a device buffer of ", this->size());
  }
};

// `count` elements of T in page-locked host memory (cudaMallocHost), for async transfers.
template <typename T>
using PinnedBuffer = CudaBuffer<T, cuda_memory::Pinned>;

}  // namespace engine
