// Device memory on either backend and the CUDA backend's lifetime (kernels/device.h); the CUDA side
// is in kernels/cuda/context.cu.
#include "device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "cpu/dispatch.h"

namespace glam::kernels {

namespace {
std::atomic<Backend> g_memory_backend{Backend::kCpu};
thread_local AllocationCount* t_count = nullptr;
// What device_alloc returns while counting: never written or read (copy_bytes skips it).
alignas(64) char g_placeholder[64];
bool is_placeholder(const void* p) { return p == static_cast<const void*>(g_placeholder); }
}  // namespace

AllocationCount::AllocationCount() : outer_(t_count) { t_count = this; }
AllocationCount::~AllocationCount() { t_count = outer_; }

void no_cuda_backend() {
  throw std::runtime_error("the CUDA backend was requested, but this build has none (configure with nvcc present)");
}

Backend memory_backend() { return g_memory_backend.load(); }
void set_memory_backend(Backend b) { g_memory_backend.store(b); }

void* device_alloc(Backend b, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (t_count) {
    t_count->add(bytes);
    return g_placeholder;
  }
  if (b == Backend::kCuda) {
#ifdef GLAM_KERNELS_CUDA
    return cuda::alloc(bytes);
#else
    no_cuda_backend();
#endif
  }
  void* p = std::calloc(bytes, 1);
  if (!p) throw std::bad_alloc();
  return p;
}

void device_free(Backend b, void* p) {
  if (!p || is_placeholder(p)) return;
  if (b == Backend::kCuda) {
#ifdef GLAM_KERNELS_CUDA
    cuda::free(p);
#endif
    return;
  }
  std::free(p);
}

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src || is_placeholder(dst) || is_placeholder(src)) return;
#ifdef GLAM_KERNELS_CUDA
  if (cuda::used()) return cuda::copy_bytes(dst, src, bytes);
#endif
  std::memcpy(dst, src, bytes);
}

#ifdef GLAM_KERNELS_CUDA
bool cuda_built() { return true; }
int cuda_device_count() { return cuda::device_count(); }
std::string cuda_no_device_reason() { return cuda::no_device_reason(); }
DeviceMemory cuda_memory() { return cuda::memory(); }
std::string cuda_device_name(int device) { return cuda::device_name(device); }
std::string cuda_device_pci_bus_id(int device) { return cuda::device_pci_bus_id(device); }
int cuda_current_device() { return cuda::current_device(); }
void cuda_set_device(int device) { cuda::set_device(device); }
void init_cuda_context(KernelContext& ctx) { cuda::init_context(ctx); }
void release_cuda_context(KernelContext& ctx) { cuda::release_context(ctx); }
#else
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_no_device_reason() { return "a build without the CUDA backend"; }
DeviceMemory cuda_memory() { return {}; }
std::string cuda_device_name(int) { return ""; }
std::string cuda_device_pci_bus_id(int) { return ""; }
int cuda_current_device() { return -1; }
void cuda_set_device(int) { no_cuda_backend(); }
void init_cuda_context(KernelContext&) { no_cuda_backend(); }
void release_cuda_context(KernelContext&) {}
#endif

}  // namespace glam::kernels
