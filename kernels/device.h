#pragma once
// Device memory and the CUDA backend's lifetime, without CUDA types (model code and tests include this).
// New DeviceBuffers allocate on the process-wide memory backend (CPU unless set); copies between host and
// device memory go through copy_bytes, which works on any pair of pointers of the backends in use.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernel_context.h"

namespace glam::kernels {

Backend memory_backend();
void set_memory_backend(Backend b);

// Sets the memory backend for its lifetime.
class MemoryBackendScope {
 public:
  explicit MemoryBackendScope(Backend b) : saved_(memory_backend()) { set_memory_backend(b); }
  ~MemoryBackendScope() { set_memory_backend(saved_); }
  MemoryBackendScope(const MemoryBackendScope&) = delete;
  MemoryBackendScope& operator=(const MemoryBackendScope&) = delete;

 private:
  Backend saved_;
};

// While one is alive on this thread, device_alloc hands out a placeholder instead of memory and adds
// the bytes asked for to the innermost one's count: what a set of buffers needs, known before any is
// made (the executor checks that a step fits this way). device_free and copy_bytes ignore the
// placeholder; buffers made under a count must be dropped before it ends.
class AllocationCount {
 public:
  AllocationCount();
  ~AllocationCount();
  AllocationCount(const AllocationCount&) = delete;
  AllocationCount& operator=(const AllocationCount&) = delete;
  int64_t bytes() const { return bytes_; }
  // Saturates: a count past 8 EiB only has to say "too much".
  void add(size_t bytes) {
    const int64_t b = bytes > static_cast<size_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(bytes);
    if (__builtin_add_overflow(bytes_, b, &bytes_)) bytes_ = INT64_MAX;
  }

 private:
  AllocationCount* outer_;
  int64_t bytes_ = 0;
};

// A device allocation that did not fit; the message gives the request and the device's free and total
// memory, and contains "out of memory".
struct DeviceOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Zero-filled memory of `bytes` on backend b (nullptr for 0 bytes); released with device_free.
// Throws DeviceOutOfMemory when the device has no room for it.
void* device_alloc(Backend b, size_t bytes);
void device_free(Backend b, void* p);
// memcpy between host and/or device memory (synchronous: waits for the kernels queued before it).
void copy_bytes(void* dst, const void* src, size_t bytes);

// CUDA: whether this build has the backend, how many devices the process sees (0 without a driver or
// device, and in a CPU-only build), their names.
bool cuda_built();
int cuda_device_count();
// Why the process sees no device: the CUDA runtime's error ("CUDA driver version is insufficient for
// CUDA runtime version", ...), "no CUDA device" when it reports none, "" when one is visible.
std::string cuda_no_device_reason();
// Bytes free and in all on the current device (cudaMemGetInfo); zeros in a CPU-only build.
struct DeviceMemory {
  int64_t free_bytes = 0, total_bytes = 0;
};
DeviceMemory cuda_memory();
std::string cuda_device_name(int device);
// The device's PCI bus id ("0000:19:00.0"), how NVML finds the same GPU; "" in a CPU-only build.
std::string cuda_device_pci_bus_id(int device);
int cuda_current_device();
void cuda_set_device(int device);
// Makes ctx a CUDA context on the current device: backend kCuda, a new stream and cuBLAS handle.
// Throws std::runtime_error without a device or in a CPU-only build.
void init_cuda_context(KernelContext& ctx);
void release_cuda_context(KernelContext& ctx);

}  // namespace glam::kernels
