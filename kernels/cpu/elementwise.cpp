#include "elementwise.h"

#include <cstring>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

template <class T>
void fill(const KernelContext& ctx, T* x, T value, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, fill<T>(ctx, x, value, n));
  if (value == T(0)) {
    std::memset(x, 0, sizeof(T) * static_cast<size_t>(n));
    return;
  }
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

template <class T>
void copy(const KernelContext& ctx, const T* src, T* dst, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, copy<T>(ctx, src, dst, n));
  if (n > 0 && src != dst) std::memcpy(dst, src, sizeof(T) * static_cast<size_t>(n));
}

template <class T>
void axpy(const KernelContext& ctx, T alpha, const T* x, T* y, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, axpy<T>(ctx, alpha, x, y, n));
  GLAM_PARALLEL_FOR(n / 4096)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <class T>
void add(const KernelContext& ctx, const T* a, const T* b, T* out, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, add<T>(ctx, a, b, out, n));
  GLAM_PARALLEL_FOR(n / 4096)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class S, class T>
void convert(const KernelContext& ctx, const S* in, T* out, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, convert<S, T>(ctx, in, out, n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(in[i]);
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

}  // namespace glam::kernels
