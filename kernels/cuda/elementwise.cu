// fill, copy, axpy, add, convert on device memory.
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

template <class T>
__global__ void fill_kernel(T* x, T v, int64_t n) {
  GLAM_GRID_STRIDE(i, n) x[i] = v;
}
template <class T>
__global__ void axpy_kernel(T alpha, const T* x, T* y, int64_t n) {
  GLAM_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  GLAM_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
template <class S, class T>
__global__ void convert_kernel(const S* in, T* out, int64_t n) {
  GLAM_GRID_STRIDE(i, n) out[i] = static_cast<T>(in[i]);
}

}  // namespace

template <class T>
void fill(const KernelContext& ctx, T* x, T value, int64_t n) {
  if (n <= 0) return;
  if (value == T(0)) {
    GLAM_CUDA_CHECK(cudaMemsetAsync(x, 0, sizeof(T) * static_cast<size_t>(n), stream_of(ctx)));
    return;
  }
  fill_kernel<<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(x, value, n);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void copy(const KernelContext& ctx, const T* src, T* dst, int64_t n) {
  if (n <= 0 || src == dst) return;
  GLAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(T) * static_cast<size_t>(n), cudaMemcpyDefault, stream_of(ctx)));
}

template <class T>
void axpy(const KernelContext& ctx, T alpha, const T* x, T* y, int64_t n) {
  if (n <= 0) return;
  axpy_kernel<<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(alpha, x, y, n);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void add(const KernelContext& ctx, const T* a, const T* b, T* out, int64_t n) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(a, b, out, n);
  GLAM_CUDA_LAUNCHED();
}

template <class S, class T>
void convert(const KernelContext& ctx, const S* in, T* out, int64_t n) {
  if (n <= 0) return;
  convert_kernel<<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(in, out, n);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T)                                                      \
  template void fill<T>(const KernelContext&, T*, T, int64_t);                   \
  template void copy<T>(const KernelContext&, const T*, T*, int64_t);            \
  template void axpy<T>(const KernelContext&, T, const T*, T*, int64_t);         \
  template void add<T>(const KernelContext&, const T*, const T*, T*, int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)
template void copy<int32_t>(const KernelContext&, const int32_t*, int32_t*, int64_t);
template void fill<int32_t>(const KernelContext&, int32_t*, int32_t, int64_t);
template void convert<float, double>(const KernelContext&, const float*, double*, int64_t);
template void convert<double, float>(const KernelContext&, const double*, float*, int64_t);
template void convert<float, float>(const KernelContext&, const float*, float*, int64_t);
template void convert<double, double>(const KernelContext&, const double*, double*, int64_t);
template void fill<bf16>(const KernelContext&, bf16*, bf16, int64_t);
template void copy<bf16>(const KernelContext&, const bf16*, bf16*, int64_t);
template void add<bf16>(const KernelContext&, const bf16*, const bf16*, bf16*, int64_t);
template void convert<float, bf16>(const KernelContext&, const float*, bf16*, int64_t);
template void convert<bf16, float>(const KernelContext&, const bf16*, float*, int64_t);

}  // namespace glam::kernels::cuda
