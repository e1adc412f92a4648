// engine/tensor.cpp: Shape and Tensor (host storage) implementation; see tensor.h.
#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/error.h"

namespace engine {

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < dims_.size(); ++i) os << (i ? ", " : "") << dims_[i];
  os << ')';
  return os.str();
}

void AlignedFree::operator()(float* p) const { std::free(p); }

HostBuffer alloc_host(int64_t numel) {
  ENGINE_CHECK(numel >= 0, "alloc_host: negative size ", numel);
  size_t bytes = static_cast<size_t>(numel) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) fail("out of host memory allocating ", bytes, " bytes");
  return HostBuffer(static_cast<float*>(p));
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)) {
  for (int64_t d : shape_.dims())
    ENGINE_CHECK(d >= 0, "Tensor: negative dimension in shape ", shape_.str());
  storage_ = alloc_host(shape_.numel());
  data_ = storage_.get();
}

Tensor Tensor::zeros(Shape shape) {
  Tensor t(std::move(shape));
  std::memset(t.data_, 0, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

Tensor Tensor::view(float* data, Shape shape) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.data_ = data;
  return t;
}

Tensor Tensor::from(Shape shape, const std::vector<float>& values) {
  ENGINE_CHECK(shape.numel() == static_cast<int64_t>(values.size()), "Tensor::from: shape ",
               shape.str(), " needs ", shape.numel(), " values, got ", values.size());
  Tensor t(std::move(shape));
  std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(shape_);
  if (numel()) std::memcpy(t.data_, data_, static_cast<size_t>(numel()) * sizeof(float));
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  ENGINE_CHECK(shape.numel() == numel(), "reshape ", shape_.str(), " -> ", shape.str());
  return view(data_, std::move(shape));
}

}  // namespace engine
