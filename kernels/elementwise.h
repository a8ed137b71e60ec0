#pragma once
// Elementwise helpers on device memory.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

template <class T> void fill(const KernelContext& ctx, T* x, T value, int64_t n);
template <class T> void copy(const KernelContext& ctx, const T* src, T* dst, int64_t n);
// y += alpha * x
template <class T> void axpy(const KernelContext& ctx, T alpha, const T* x, T* y, int64_t n);
// out = a + b
template <class T> void add(const KernelContext& ctx, const T* a, const T* b, T* out, int64_t n);
// out[i] = in[i] converted (float <-> double for the reference path and checkpoints, float <-> bf16
// for the bf16 copies of the weights and the float32 router and loss)
template <class S, class T> void convert(const KernelContext& ctx, const S* in, T* out, int64_t n);

}  // namespace glam::kernels
