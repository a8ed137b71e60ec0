// Matrix products through cuBLAS. Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
// so every call swaps the operands. bf16 inputs run on the bf16 tensor cores with float32
// accumulation (C in bf16 or float32); float32 inputs in the context's precision: fp32, TF32, or
// bf16 with float32 accumulation (CUBLAS_COMPUTE_32F_FAST_16BF, converting the operands).
#include <cublas_v2.h>

#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error ") + std::to_string(static_cast<int>(s)) + " in " + what);
}

int narrow(int64_t v) {
  if (v < 0 || v > std::numeric_limits<int>::max()) throw std::runtime_error("cuBLAS size beyond 2^31: " + std::to_string(v));
  return static_cast<int>(v);
}

template <class T>
cudaDataType_t data_type() {
  return std::is_same_v<T, bf16> ? CUDA_R_16BF : CUDA_R_32F;
}

// bf16 storage always multiplies in bf16 on the tensor cores; float32 storage in the context's precision.
template <class T>
cublasComputeType_t compute_type(const KernelContext& ctx) {
  if (std::is_same_v<T, bf16>) return CUBLAS_COMPUTE_32F;
  switch (ctx.gemm_precision) {
    case GemmPrecision::kTf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmPrecision::kBf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case GemmPrecision::kFp32: break;
  }
  return CUBLAS_COMPUTE_32F;
}

cublasHandle_t handle(const KernelContext& ctx) {
  if (!ctx.blas_handle) throw std::runtime_error("CUDA context without a cuBLAS handle (init_cuda_context)");
  return static_cast<cublasHandle_t>(ctx.blas_handle);
}

cublasOperation_t op(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Float32 and bf16 inputs (C float32 or bf16) through cublasGemmEx; float64 through cublasDgemm.
template <class T, class C>
void gemm_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, acc_t<T> alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, acc_t<T> beta, C* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, double>) {
    check(cublasDgemm(handle(ctx), op(tb), op(ta), narrow(n), narrow(m), narrow(k), &alpha, b, narrow(ldb), a,
                      narrow(lda), &beta, c, narrow(ldc)),
          "cublasDgemm");
  } else {
    check(cublasGemmEx(handle(ctx), op(tb), op(ta), narrow(n), narrow(m), narrow(k), &alpha, b, data_type<T>(),
                       narrow(ldb), a, data_type<T>(), narrow(lda), &beta, c, data_type<C>(), narrow(ldc),
                       compute_type<T>(ctx), CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  }
}
template <class T, class C>
void batched_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, acc_t<T> alpha,
                  const T* a, int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, acc_t<T> beta, C* c,
                  int64_t ldc, int64_t sc, int64_t batch) {
  if constexpr (std::is_same_v<T, double>) {
    check(cublasDgemmStridedBatched(handle(ctx), op(tb), op(ta), narrow(n), narrow(m), narrow(k), &alpha, b,
                                    narrow(ldb), sb, a, narrow(lda), sa, &beta, c, narrow(ldc), sc, narrow(batch)),
          "cublasDgemmStridedBatched");
  } else {
    check(cublasGemmStridedBatchedEx(handle(ctx), op(tb), op(ta), narrow(n), narrow(m), narrow(k), &alpha, b,
                                     data_type<T>(), narrow(ldb), sb, a, data_type<T>(), narrow(lda), sa, &beta, c,
                                     data_type<C>(), narrow(ldc), sc, narrow(batch), compute_type<T>(ctx),
                                     CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx");
  }
}

// Times a product for ctx.gemm_log (synchronizing around it) or just runs it.
template <class F>
void logged(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t batch, F f) {
  if (!ctx.gemm_log) return f();
  cuda::synchronize(ctx);
  auto t0 = std::chrono::steady_clock::now();
  f();
  cuda::synchronize(ctx);
  ctx.gemm_log->push_back({ta, tb, m, n, k, batch, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
}

}  // namespace

template <class T, class C>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, acc_t<T> alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, acc_t<T> beta, C* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  logged(ctx, trans_a, trans_b, m, n, k, 1,
         [&] { gemm_impl(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
}

template <class T, class C>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          acc_t<T> alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, acc_t<T> beta, C* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  logged(ctx, trans_a, trans_b, m, n, k, batch, [&] {
    batched_impl(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                 batch);
  });
}

#define GLAM_INSTANTIATE(T, C)                                                                                   \
  template void gemm<T, C>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, acc_t<T>, const T*,       \
                           int64_t, const T*, int64_t, acc_t<T>, C*, int64_t);                                    \
  template void gemm_strided_batched<T, C>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, acc_t<T>, \
                                           const T*, int64_t, int64_t, const T*, int64_t, int64_t, acc_t<T>, C*,   \
                                           int64_t, int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, bf16)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
