// RMSNorm forward and backward: one block per row (sums of squares in float64, as the CPU), the
// scale gradient as column sums over row chunks, then over the chunks (column_sum_of_chunks).
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"
#include "norm.h"

namespace glam::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunkRows = 64;  // rows per partial sum of the scale gradient

// kPacked: the row in 16-byte packs (packs_fit), with the same arithmetic per element.
template <class T, bool kPacked>
__global__ void rms_fwd(const T* x, const T* scale, T* y, acc_t<T>* inv_rms, int64_t dim) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * dim;
  T* yr = y + r * dim;
  constexpr int P = Pack<T>::kSize;
  double ss = 0;
  if constexpr (kPacked) {
    for (int64_t k = threadIdx.x; k < dim / P; k += blockDim.x) {
      const Pack<T> a = load_pack(xr, k);
      for (int j = 0; j < P; ++j) ss += static_cast<double>(a.v[j]) * static_cast<double>(a.v[j]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
  }
  ss = block_sum(ss);
  const acc_t<T> inv = static_cast<acc_t<T>>(1.0 / sqrt(ss / static_cast<double>(dim) + kRmsNormEps));
  if (threadIdx.x == 0) inv_rms[r] = inv;
  if constexpr (kPacked) {
    for (int64_t k = threadIdx.x; k < dim / P; k += blockDim.x) {
      const Pack<T> a = load_pack(xr, k), sc = load_pack(scale, k);
      Pack<T> out;
      for (int j = 0; j < P; ++j) out.v[j] = a.v[j] * inv * sc.v[j];
      store_pack(yr, k, out);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * scale[i];
  }
}

template <class T, bool kPacked>
__global__ void rms_bwd_dx(const T* dy, const T* x, const T* scale, const acc_t<T>* inv_rms, T* dx, int64_t dim) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * dim;
  const T* dyr = dy + r * dim;
  T* dxr = dx + r * dim;
  constexpr int P = Pack<T>::kSize;
  double dot = 0;
  if constexpr (kPacked) {
    for (int64_t k = threadIdx.x; k < dim / P; k += blockDim.x) {
      const Pack<T> g = load_pack(dyr, k), a = load_pack(xr, k), sc = load_pack(scale, k);
      for (int j = 0; j < P; ++j) dot += static_cast<double>(g.v[j]) * sc.v[j] * a.v[j];
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dot += static_cast<double>(dyr[i]) * scale[i] * xr[i];
  }
  dot = block_sum(dot);
  const acc_t<T> inv = inv_rms[r];
  const acc_t<T> c = static_cast<acc_t<T>>(dot * static_cast<double>(inv) * inv * inv / static_cast<double>(dim));
  if constexpr (kPacked) {
    for (int64_t k = threadIdx.x; k < dim / P; k += blockDim.x) {
      const Pack<T> g = load_pack(dyr, k), a = load_pack(xr, k), sc = load_pack(scale, k);
      Pack<T> d = load_pack(dxr, k);
      for (int j = 0; j < P; ++j) d.v[j] += inv * sc.v[j] * g.v[j] - a.v[j] * c;
      store_pack(dxr, k, d);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dxr[i] += inv * scale[i] * dyr[i] - xr[i] * c;
  }
}

// partial[chunk, col] = sum over the chunk's rows of dy * x * inv; block (32, 8).
template <class T>
__global__ void rms_bwd_dscale_partial(const T* dy, const T* x, const acc_t<T>* inv_rms, acc_t<T>* partial, int64_t rows,
                                       int64_t dim) {
  using A = acc_t<T>;
  __shared__ A sh[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t{kChunkRows};
  const int64_t r1 = r0 + kChunkRows < rows ? r0 + kChunkRows : rows;
  A acc = 0;
  if (col < dim)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8)
      acc += static_cast<A>(dy[r * dim + col]) * static_cast<A>(x[r * dim + col]) * inv_rms[r];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < dim) {
    A s = 0;
    for (int j = 0; j < 8; ++j) s += sh[j][threadIdx.x];
    partial[blockIdx.y * dim + col] = s;
  }
}

// out[c] += the sum over the chunks of partial[chunk, c]; block (32, 8).
template <class A, class G>
__global__ void add_column_sums(const A* partial, int64_t chunks, int64_t dim, G* out) {
  const A s = column_sum_of_chunks(partial, chunks, dim);
  const int64_t c = blockIdx.x * int64_t{32} + threadIdx.x;
  if (threadIdx.y == 0 && c < dim) out[c] += s;
}

}  // namespace

template <class T>
void rmsnorm_forward(const KernelContext& ctx, const T* x, const T* scale, T* y, acc_t<T>* inv_rms, int64_t rows, int64_t dim) {
  if (rows <= 0) return;
  if (packs_fit<T>(dim, {x, scale, y}))
    rms_fwd<T, true><<<static_cast<unsigned>(rows), threads_for(dim / Pack<T>::kSize, kThreads), 0, stream_of(ctx)>>>(
        x, scale, y, inv_rms, dim);
  else
    rms_fwd<T, false><<<static_cast<unsigned>(rows), threads_for(dim, kThreads), 0, stream_of(ctx)>>>(x, scale, y,
                                                                                                     inv_rms, dim);
  GLAM_CUDA_LAUNCHED();
}

template <class T, class G>
void rmsnorm_backward(const KernelContext& ctx, const T* dy, const T* x, const T* scale, const acc_t<T>* inv_rms, T* dx,
                      G* dscale, int64_t rows, int64_t dim) {
  if (rows <= 0 || dim <= 0) return;  // a grid of dim / 32 blocks would be empty, which CUDA refuses
  cudaStream_t s = stream_of(ctx);
  if (packs_fit<T>(dim, {dy, x, scale, dx}))
    rms_bwd_dx<T, true><<<static_cast<unsigned>(rows), threads_for(dim / Pack<T>::kSize, kThreads), 0, s>>>(
        dy, x, scale, inv_rms, dx, dim);
  else
    rms_bwd_dx<T, false><<<static_cast<unsigned>(rows), threads_for(dim, kThreads), 0, s>>>(dy, x, scale, inv_rms, dx,
                                                                                            dim);
  GLAM_CUDA_LAUNCHED();
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  auto* partial = static_cast<acc_t<T>*>(scratch(s, sizeof(acc_t<T>) * static_cast<size_t>(chunks * dim)));
  dim3 grid(column_blocks(dim), static_cast<unsigned>(chunks));
  rms_bwd_dscale_partial<<<grid, dim3(32, 8), 0, s>>>(dy, x, inv_rms, partial, rows, dim);
  GLAM_CUDA_LAUNCHED();
  add_column_sums<<<column_blocks(dim), dim3(32, 8), 0, s>>>(partial, chunks, dim, dscale);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T, G)                                                                                \
  template void rmsnorm_forward<T>(const KernelContext&, const T*, const T*, T*, acc_t<T>*, int64_t, int64_t); \
  template void rmsnorm_backward<T, G>(const KernelContext&, const T*, const T*, const T*, const acc_t<T>*, T*, G*, \
                                       int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
