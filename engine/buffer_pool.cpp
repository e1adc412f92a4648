// engine/buffer_pool.cpp: see buffer_pool.h.
#include "engine/buffer_pool.h"

namespace engine {

PooledTensor::PooledTensor(PooledTensor&& o) noexcept
    : pool_(o.pool_), slot_(o.slot_), t_(std::move(o.t_)) {
  o.pool_ = nullptr;
  o.slot_ = -1;
}

PooledTensor& PooledTensor::operator=(PooledTensor&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = o.pool_, slot_ = o.slot_, t_ = std::move(o.t_);
    o.pool_ = nullptr, o.slot_ = -1;
  }
  return *this;
}

PooledTensor::~PooledTensor() { release(); }

void PooledTensor::release() {
  if (pool_) pool_->release(slot_);
  pool_ = nullptr;
  slot_ = -1;
}

PooledTensor BufferPool::acquire(const Shape& shape) {
  const int64_t need = shape.numel();
  int best = -1;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    const Slot& s = slots_[static_cast<size_t>(i)];
    if (!s.in_use && s.capacity >= need &&
        (best < 0 || s.capacity < slots_[static_cast<size_t>(best)].capacity))
      best = i;
  }
  if (best < 0) {
    Slot s;
    s.buf = alloc_host(need);
    s.capacity = need;
    reserved_bytes_ += need * static_cast<int64_t>(sizeof(float));
    ++allocations_;
    slots_.push_back(std::move(s));
    best = static_cast<int>(slots_.size()) - 1;
  }
  Slot& s = slots_[static_cast<size_t>(best)];
  s.in_use = true;
  in_use_bytes_ += s.capacity * static_cast<int64_t>(sizeof(float));
  return PooledTensor(this, best, Tensor::view(s.buf.get(), shape));
}

void BufferPool::release(int slot) {
  Slot& s = slots_.at(static_cast<size_t>(slot));
  s.in_use = false;
  in_use_bytes_ -= s.capacity * static_cast<int64_t>(sizeof(float));
}

}  // namespace engine
