#pragma once
// RMSNorm (pre-norm, no bias): y = x / sqrt(mean(x^2) + eps) * scale, per row of `dim` values.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

inline constexpr double kRmsNormEps = 1e-6;

// Writes y[rows,dim] and inv_rms[rows] (kept for the backward pass, in float32 for bf16 T so that the
// backward pass uses the forward's exact value).
template <class T>
void rmsnorm_forward(const KernelContext& ctx, const T* x, const T* scale, T* y, acc_t<T>* inv_rms, int64_t rows, int64_t dim);

// Accumulates: dx += d/dx, dscale += d/dscale (summed over rows). G is T, or float32 for bf16 T
// (weight gradients stay in float32).
template <class T, class G = T>
void rmsnorm_backward(const KernelContext& ctx, const T* dy, const T* x, const T* scale, const acc_t<T>* inv_rms, T* dx,
                      G* dscale, int64_t rows, int64_t dim);

}  // namespace glam::kernels
