#pragma once
// Memory on the executing device. A buffer allocates on the process-wide memory backend in force
// when it is (re)sized (kernels/device.h: host memory for the CPU backend, cudaMalloc for CUDA) and
// frees on the same one; contents start zeroed. copy_to_host / copy_to_device move data between
// host memory and buffers of either backend.
#include <cstdint>
#include <utility>

#include "device.h"

namespace glam::exec {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) { resize(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(o.data_), size_(o.size_), backend_(o.backend_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      backend_ = o.backend_;
    }
    return *this;
  }

  // Reallocates n zeroed elements on the current memory backend.
  void resize(int64_t n) {
    release();
    backend_ = kernels::memory_backend();
    data_ = static_cast<T*>(kernels::device_alloc(backend_, sizeof(T) * static_cast<size_t>(n > 0 ? n : 0)));
    size_ = n > 0 ? n : 0;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  int64_t bytes() const { return size() * static_cast<int64_t>(sizeof(T)); }
  kernels::Backend backend() const { return backend_; }

 private:
  void release() {
    kernels::device_free(backend_, data_);
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  int64_t size_ = 0;
  kernels::Backend backend_ = kernels::Backend::kCpu;
};

template <class T>
void copy_to_host(const T* device, T* host, int64_t n) {
  if (n > 0) kernels::copy_bytes(host, device, sizeof(T) * static_cast<size_t>(n));
}
template <class T>
void copy_to_device(const T* host, T* device, int64_t n) {
  if (n > 0) kernels::copy_bytes(device, host, sizeof(T) * static_cast<size_t>(n));
}

}  // namespace glam::exec
