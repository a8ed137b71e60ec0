#pragma once
// Memory on the executing device. On the CPU backend this is host memory; the CUDA backend
// allocates with cudaMalloc behind the same interface and copies with the two helpers below.
#include <cstdint>
#include <cstring>
#include <vector>

namespace glam::exec {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) { resize(n); }
  void resize(int64_t n) { data_.assign(static_cast<size_t>(n), T{}); }
  T* data() { return data_.empty() ? nullptr : data_.data(); }
  const T* data() const { return data_.empty() ? nullptr : data_.data(); }
  int64_t size() const { return static_cast<int64_t>(data_.size()); }
  int64_t bytes() const { return size() * static_cast<int64_t>(sizeof(T)); }

 private:
  std::vector<T> data_;
};

template <class T>
void copy_to_host(const T* device, T* host, int64_t n) {
  if (n > 0) std::memcpy(host, device, sizeof(T) * static_cast<size_t>(n));
}
template <class T>
void copy_to_device(const T* host, T* device, int64_t n) {
  if (n > 0) std::memcpy(device, host, sizeof(T) * static_cast<size_t>(n));
}

}  // namespace glam::exec
