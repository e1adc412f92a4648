// engine/buffer_pool.h: activation memory reused across layers and batches. acquire() hands out
// a PooledTensor (a view over a pooled host buffer) that returns the buffer to the free list when
// it goes out of scope; the smallest free buffer that fits is reused, so after the first forward
// pass of a given batch size no new memory is allocated and the reserved total equals the peak
// live set of that pass. Not thread-safe: one pool per model instance.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace engine {

class BufferPool;

class PooledTensor {
 public:
  PooledTensor() = default;
  PooledTensor(BufferPool* pool, int slot, Tensor t) : pool_(pool), slot_(slot), t_(std::move(t)) {}
  PooledTensor(PooledTensor&& o) noexcept;
  PooledTensor& operator=(PooledTensor&& o) noexcept;
  ~PooledTensor();
  Tensor& operator*() { return t_; }
  const Tensor& operator*() const { return t_; }
  Tensor* operator->() { return &t_; }
  const Tensor* operator->() const { return &t_; }

 private:
  void release();
  BufferPool* pool_ = nullptr;
  int slot_ = -1;
  Tensor t_;
};

class BufferPool {
 public:
  PooledTensor acquire(const Shape& shape);
  int64_t reserved_bytes() const { return reserved_bytes_; }  // all buffers ever allocated
  int64_t in_use_bytes() const { return in_use_bytes_; }
  int64_t allocations() const { return allocations_; }  // host allocations made

 private:
  friend class PooledTensor;
  void release(int slot);
  struct Slot {
    HostBuffer buf;
    int64_t capacity = 0;  // floats
    bool in_use = false;
  };
  std::vector<Slot> slots_;
  int64_t reserved_bytes_ = 0, in_use_bytes_ = 0, allocations_ = 0;
};

}  // namespace engine
