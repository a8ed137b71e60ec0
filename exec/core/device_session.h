#pragma once
// The CUDA context of a run (stream, cuBLAS handle) and the memory backend for its buffers, released
// after everything allocated under it: declare it before the buffers. On the CPU it only sets the
// memory backend.
#include "device.h"
#include "kernel_context.h"

namespace glam::exec {

class DeviceSession {
 public:
  DeviceSession(kernels::KernelContext& ctx, bool cuda)
      : ctx_(ctx), memory_(cuda ? kernels::Backend::kCuda : kernels::Backend::kCpu) {
    if (cuda) kernels::init_cuda_context(ctx_);
  }
  ~DeviceSession() { kernels::release_cuda_context(ctx_); }
  DeviceSession(const DeviceSession&) = delete;
  DeviceSession& operator=(const DeviceSession&) = delete;

 private:
  kernels::KernelContext& ctx_;
  kernels::MemoryBackendScope memory_;
};

}  // namespace glam::exec
