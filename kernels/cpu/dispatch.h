#pragma once
// Backend dispatch at the top of every kernel entry point:
//   GLAM_CUDA_DISPATCH(ctx, rmsnorm_forward<T>(ctx, x, ...));
// calls glam::kernels::cuda::rmsnorm_forward<T>(...) and returns when ctx.backend is kCuda; a build
// without the CUDA backend throws std::runtime_error instead.
#include "kernel_context.h"

namespace glam::kernels {
[[noreturn]] void no_cuda_backend();
}

#ifdef GLAM_KERNELS_CUDA
#include "cuda/cuda_backend.h"
#define GLAM_CUDA_DISPATCH(ctx, ...)                                          \
  do {                                                                        \
    if ((ctx).backend == ::glam::kernels::Backend::kCuda) {                   \
      ::glam::kernels::cuda::__VA_ARGS__;                                     \
      return;                                                                 \
    }                                                                         \
  } while (0)
#else
#define GLAM_CUDA_DISPATCH(ctx, ...)                                                            \
  do {                                                                                          \
    if ((ctx).backend == ::glam::kernels::Backend::kCuda) ::glam::kernels::no_cuda_backend();   \
  } while (0)
#endif
