#include "gemm.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <type_traits>
#include <vector>

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

// bf16 operands: the product of two bf16 values is exact in float32, so converting the inputs to
// float32 and accumulating in float32 is the same arithmetic as bf16 tensor cores (up to the order of
// the sums). Each operand's whole span (every matrix of a batch, padding included) is converted once.
int64_t span(int64_t batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}
const float* as_float(const float* x, int64_t, std::vector<float>&) { return x; }
const double* as_float(const double* x, int64_t, std::vector<float>&) { return x; }
const float* as_float(const bf16* x, int64_t n, std::vector<float>& tmp) {
  tmp.assign(x, x + n);
  return tmp.data();
}
// The output in the product's type: C itself, or a float32 copy of a bf16 C (its whole span, so that
// what the product does not write round-trips unchanged) that `store` writes back.
template <class C>
struct Output {
  C* c;
  int64_t n;
  std::vector<float> tmp;
  auto* data() {
    if constexpr (std::is_same_v<C, bf16>) {
      tmp.assign(c, c + n);
      return tmp.data();
    } else {
      return c;
    }
  }
  void store() {
    if constexpr (std::is_same_v<C, bf16>) std::copy(tmp.begin(), tmp.end(), c);
  }
};

template <class T, class C, class F>
void run_product(const KernelContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t batch,
                 const T* a, int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, C* c, int64_t ldc,
                 int64_t sc, F product) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> ta_tmp, tb_tmp;
  const auto* af = as_float(a, span(batch, sa, ta ? k : m, lda, ta ? m : k), ta_tmp);
  const auto* bf = as_float(b, span(batch, sb, tb ? n : k, ldb, tb ? k : n), tb_tmp);
  Output<C> out{c, span(batch, sc, m, ldc, n), {}};
  auto* cf = out.data();
  for (int64_t i = 0; i < batch; ++i) product(af + i * sa, bf + i * sb, cf + i * sc);
  out.store();
  if (ctx.gemm_log)
    ctx.gemm_log->push_back({ta, tb, m, n, k, batch,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
}

}  // namespace

template <class T, class C>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, acc_t<T> alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, acc_t<T> beta, C* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  GLAM_CUDA_DISPATCH(ctx, gemm<T, C>(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
  run_product(ctx, trans_a, trans_b, m, n, k, 1, a, lda, 0, b, ldb, 0, c, ldc, 0, [&](auto* x, auto* y, auto* z) {
    blas(trans_a, trans_b, m, n, k, alpha, x, lda, y, ldb, beta, z, ldc);
  });
}

template <class T, class C>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          acc_t<T> alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, acc_t<T> beta, C* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  GLAM_CUDA_DISPATCH(ctx, gemm_strided_batched<T, C>(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                                                     stride_b, beta, c, ldc, stride_c, batch));
  run_product(ctx, trans_a, trans_b, m, n, k, batch, a, lda, stride_a, b, ldb, stride_b, c, ldc, stride_c,
              [&](auto* x, auto* y, auto* z) { blas(trans_a, trans_b, m, n, k, alpha, x, lda, y, ldb, beta, z, ldc); });
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

}  // namespace glam::kernels
