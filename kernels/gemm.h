#pragma once
// Matrix products, row-major: C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C.
// op(X) is X or X^T; lda/ldb/ldc are row strides of the stored matrices. T is float, double (the
// reference path of the gradient checks) or bf16 (products of bf16 activations, accumulated in
// float32). C is T, or float32 for bf16 inputs (weight gradients, router and output logits).
#include <cstdint>

#include "bfloat16.h"
#include "kernel_context.h"

namespace glam::kernels {

template <class T, class C = T>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, acc_t<T> alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, acc_t<T> beta, C* c, int64_t ldc);

// `batch` independent products; matrix i starts at a + i*stride_a (likewise b and c).
template <class T, class C = T>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          acc_t<T> alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, acc_t<T> beta, C* c, int64_t ldc, int64_t stride_c, int64_t batch);

}  // namespace glam::kernels
