// Matrix products through cuBLAS. Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
// so every call swaps the operands. Float products run in the context's precision: fp32, TF32, or
// bf16 inputs with fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_16BF on fp32 storage).
#include <cublas_v2.h>

#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>

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

cublasComputeType_t compute_type(GemmPrecision p) {
  switch (p) {
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

void gemm_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  check(cublasGemmEx(handle(ctx), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, narrow(n), narrow(m),
                     narrow(k), &alpha, b, CUDA_R_32F, narrow(ldb), a, CUDA_R_32F, narrow(lda), &beta, c, CUDA_R_32F,
                     narrow(ldc), compute_type(ctx.gemm_precision), CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}
void gemm_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
               const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  check(cublasDgemm(handle(ctx), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, narrow(n), narrow(m),
                    narrow(k), &alpha, b, narrow(ldb), a, narrow(lda), &beta, c, narrow(ldc)),
        "cublasDgemm");
}
void batched_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t sa, const float* b, int64_t ldb, int64_t sb, float beta, float* c,
                  int64_t ldc, int64_t sc, int64_t batch) {
  check(cublasGemmStridedBatchedEx(handle(ctx), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   narrow(n), narrow(m), narrow(k), &alpha, b, CUDA_R_32F, narrow(ldb), sb, a,
                                   CUDA_R_32F, narrow(lda), sa, &beta, c, CUDA_R_32F, narrow(ldc), sc, narrow(batch),
                                   compute_type(ctx.gemm_precision), CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}
void batched_impl(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, int64_t sa, const double* b, int64_t ldb, int64_t sb, double beta,
                  double* c, int64_t ldc, int64_t sc, int64_t batch) {
  check(cublasDgemmStridedBatched(handle(ctx), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  narrow(n), narrow(m), narrow(k), &alpha, b, narrow(ldb), sb, a, narrow(lda), sa,
                                  &beta, c, narrow(ldc), sc, narrow(batch)),
        "cublasDgemmStridedBatched");
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

template <class T>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  logged(ctx, trans_a, trans_b, m, n, k, 1,
         [&] { gemm_impl(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
}

template <class T>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          T alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  logged(ctx, trans_a, trans_b, m, n, k, batch, [&] {
    batched_impl(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                 batch);
  });
}

#define GLAM_INSTANTIATE(T)                                                                                    \
  template void gemm<T>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,      \
                        const T*, int64_t, T, T*, int64_t);                                                     \
  template void gemm_strided_batched<T>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, T, const T*, \
                                        int64_t, int64_t, const T*, int64_t, int64_t, T, T*, int64_t, int64_t,   \
                                        int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels::cuda
