#pragma once
// Matrix products, row-major: C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C.
// op(X) is X or X^T; lda/ldb/ldc are row strides of the stored matrices. T is float or double
// (double is the reference path of the gradient checks).
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

template <class T>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// `batch` independent products; matrix i starts at a + i*stride_a (likewise b and c).
template <class T>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          T alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch);

}  // namespace glam::kernels
