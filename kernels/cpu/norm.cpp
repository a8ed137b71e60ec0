#include "norm.h"

#include <cmath>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

template <class T>
void rmsnorm_forward(const KernelContext& ctx, const T* x, const T* scale, T* y, acc_t<T>* inv_rms, int64_t rows, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, rmsnorm_forward<T>(ctx, x, scale, y, inv_rms, rows, dim));
  GLAM_PARALLEL_FOR(rows / 16)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
    const acc_t<T> inv = static_cast<acc_t<T>>(1.0 / std::sqrt(ss / static_cast<double>(dim) + kRmsNormEps));
    inv_rms[r] = inv;
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * scale[i];
  }
}

template <class T, class G>
void rmsnorm_backward(const KernelContext& ctx, const T* dy, const T* x, const T* scale, const acc_t<T>* inv_rms, T* dx,
                      G* dscale, int64_t rows, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, rmsnorm_backward<T, G>(ctx, dy, x, scale, inv_rms, dx, dscale, rows, dim));
  // y_i = x_i r s_i, r = (mean(x^2) + eps)^-1/2:  dx_i = r s_i dy_i - x_i r^3 / dim * sum_j dy_j s_j x_j
  GLAM_PARALLEL_FOR(rows / 16)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    double dot = 0;
    for (int64_t i = 0; i < dim; ++i) dot += static_cast<double>(dyr[i]) * scale[i] * xr[i];
    const acc_t<T> inv = inv_rms[r];
    const acc_t<T> c = static_cast<acc_t<T>>(dot * static_cast<double>(inv) * inv * inv / static_cast<double>(dim));
    for (int64_t i = 0; i < dim; ++i) dxr[i] += inv * scale[i] * dyr[i] - xr[i] * c;
  }
  // dscale_i = sum_r dy_ri x_ri r_r, summed over rows in order (deterministic).
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    const acc_t<T> inv = inv_rms[r];
    for (int64_t i = 0; i < dim; ++i) dscale[i] += dyr[i] * xr[i] * inv;
  }
}

#define GLAM_INSTANTIATE(T, G)                                                                                \
  template void rmsnorm_forward<T>(const KernelContext&, const T*, const T*, T*, acc_t<T>*, int64_t, int64_t); \
  template void rmsnorm_backward<T, G>(const KernelContext&, const T*, const T*, const T*, const acc_t<T>*, T*, G*, \
                                       int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels
