#include "gemm.h"

#include <cblas.h>

#include <chrono>
#include "cpu/dispatch.h"

namespace glam::kernels {
namespace {

inline void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}
inline void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                 const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

}  // namespace

template <class T>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  GLAM_CUDA_DISPATCH(ctx, gemm<T>(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
  auto t0 = std::chrono::steady_clock::now();
  blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (ctx.gemm_log)
    ctx.gemm_log->push_back({trans_a, trans_b, m, n, k, 1,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
}

template <class T>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          T alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  GLAM_CUDA_DISPATCH(ctx, gemm_strided_batched<T>(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                                                  stride_b, beta, c, ldc, stride_c, batch));
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < batch; ++i)
    blas(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
  if (ctx.gemm_log)
    ctx.gemm_log->push_back({trans_a, trans_b, m, n, k, batch,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
}

#define GLAM_INSTANTIATE(T)                                                                                    \
  template void gemm<T>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,      \
                        const T*, int64_t, T, T*, int64_t);                                                     \
  template void gemm_strided_batched<T>(const KernelContext&, bool, bool, int64_t, int64_t, int64_t, T, const T*, \
                                        int64_t, int64_t, const T*, int64_t, int64_t, T, T*, int64_t, int64_t,   \
                                        int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels
