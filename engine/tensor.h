// engine/tensor.h: the engine's tensor: float32, row-major, NHWC for images (N,H,W,C), with
// an owning, move-only, 64-byte aligned storage (RAII). A Tensor may also be a non-owning view
// (Tensor::view) over memory someone else owns, e.g. a channel-packed buffer of an arena.
// A Tensor is HOST memory only. GPU memory is owned by engine::DeviceBuffer<T>
// (engine/cuda_resources.h) and described, where a kernel needs shape and strides, by the kernel's
// own view type (kernels/pool2d_cuda.h StridedView): the GPU code never needed a device Tensor,
// and a Tensor that might live on either side would make every CPU kernel check where its data is.
// Which device runs the work is engine::Device (engine/cuda_device.h, resolve_device()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace engine {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}
  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t operator[](int i) const { return dims_.at(static_cast<size_t>(i)); }
  int64_t& operator[](int i) { return dims_.at(static_cast<size_t>(i)); }
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }
  std::string str() const;  // "(2, 7, 9, 5)"

 private:
  std::vector<int64_t> dims_;
};

// Aligned host allocation, freed with free(); used by Tensor and by the buffer pool.
struct AlignedFree {
  void operator()(float* p) const;
};
using HostBuffer = std::unique_ptr<float[], AlignedFree>;
HostBuffer alloc_host(int64_t numel);  // 64-byte aligned, uninitialised; throws Error on OOM

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape shape);  // owning host memory, uninitialised
  static Tensor zeros(Shape shape);
  static Tensor view(float* data, Shape shape);  // non-owning, over host memory
  static Tensor from(Shape shape, const std::vector<float>& values);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor clone() const;  // deep copy into owning CPU storage

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t numel() const { return shape_.numel(); }
  int64_t dim(int i) const { return shape_[i]; }
  // NHWC accessors; valid for rank-4 tensors.
  int64_t n() const { return shape_[0]; }
  int64_t h() const { return shape_[1]; }
  int64_t w() const { return shape_[2]; }
  int64_t c() const { return shape_[3]; }
  float* data() { return data_; }
  const float* data() const { return data_; }
  bool owns() const { return static_cast<bool>(storage_); }
  bool empty() const { return data_ == nullptr; }
  // Reinterpret the same storage with another shape of equal numel (non-owning view).
  Tensor reshaped(Shape shape) const;

 private:
  Shape shape_;
  HostBuffer storage_;
  float* data_ = nullptr;
};

}  // namespace engine
