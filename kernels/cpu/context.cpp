#include <cblas.h>

#include "kernel_context.h"
#include "cpu/dispatch.h"
#ifdef GLAM_KERNELS_OPENMP
#include <omp.h>
#endif

namespace glam::kernels {

void set_cpu_threads(KernelContext& ctx, int threads) {
  ctx.threads = threads < 1 ? 1 : threads;
  openblas_set_num_threads(ctx.threads);
#ifdef GLAM_KERNELS_OPENMP
  omp_set_num_threads(ctx.threads);
#endif
}

void synchronize(const KernelContext& ctx) { GLAM_CUDA_DISPATCH(ctx, synchronize(ctx)); }

}  // namespace glam::kernels
