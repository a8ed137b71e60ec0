// Adafactor for one parameter tensor on the GPU, the CPU's arithmetic (float64 sums and factors)
// in a few passes, with no host round trip: row sums (and the parameter's sum of squares) per row,
// column sums over row chunks then over the chunks, block sums of the small vectors, and the update,
// which computes the step size from those sums.
#include <algorithm>
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

constexpr int kChunkRows = 64;

struct Hyper {
  double beta2, eps1, eps2, clip, step_size;
};

template <class T>
__global__ void af_rows(T* param, const T* grad, T* row_state, double* prow, int64_t cols, Hyper h) {
  const int64_t r = blockIdx.x;
  const T* g = grad + r * cols;
  const T* w = param + r * cols;
  double acc = 0, ps = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    double gv = g[c], wv = w[c];
    acc += gv * gv + h.eps1;
    ps += wv * wv;
  }
  acc = block_sum(acc);
  ps = block_sum(ps);
  if (threadIdx.x == 0) {
    row_state[r] = static_cast<T>(h.beta2 * row_state[r] + (1 - h.beta2) * acc / static_cast<double>(cols));
    prow[r] = ps;
  }
}

template <class T>
__global__ void af_col_partial(const T* grad, double* partial, int64_t rows, int64_t cols, double eps1) {
  __shared__ double sh[8][33];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t{kChunkRows};
  const int64_t r1 = r0 + kChunkRows < rows ? r0 + kChunkRows : rows;
  double acc = 0;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      double gv = grad[r * cols + c];
      acc += gv * gv + eps1;
    }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double s = 0;
    for (int j = 0; j < 8; ++j) s += sh[j][threadIdx.x];
    partial[blockIdx.y * cols + c] = s;
  }
}

template <class T>
__global__ void af_cols(const double* partial, int64_t chunks, int64_t rows, int64_t cols, T* col_state, double* b,
                        Hyper h) {
  GLAM_GRID_STRIDE(c, cols) {
    double acc = 0;
    for (int64_t j = 0; j < chunks; ++j) acc += partial[j * cols + c];
    T s = static_cast<T>(h.beta2 * col_state[c] + (1 - h.beta2) * acc / static_cast<double>(rows));
    col_state[c] = s;
    b[c] = 1.0 / sqrt(static_cast<double>(s));
  }
}

// out[0] = sum of x[0..n) (one block).
template <class S>
__global__ void sum_to(const S* x, int64_t n, double* out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += static_cast<double>(x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

// sums: [0] sum of row_state, [1] sum of param^2, [2] sum of U^2
template <class T>
__global__ void af_update_rows(const T* grad, const T* row_state, const double* b, const double* sums, double* urow,
                               int64_t rows, int64_t cols) {
  const int64_t r = blockIdx.x;
  const T* g = grad + r * cols;
  double acc = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    double u = g[c] * b[c];
    acc += u * u;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    const double row_mean = sums[0] / static_cast<double>(rows);
    const double a = sqrt(row_mean / static_cast<double>(row_state[r]));
    urow[r] = acc * a * a;
  }
}

__device__ double learning_rate(const double* sums, int64_t n, const Hyper& h) {
  const double param_rms = sqrt(sums[1] / static_cast<double>(n));
  const double update_rms = sqrt(sums[2] / static_cast<double>(n));
  return h.step_size * fmax(h.eps2, param_rms) / fmax(1.0, update_rms / h.clip);
}

template <class T>
__global__ void af_apply(T* param, const T* grad, const T* row_state, const double* b, const double* sums, int64_t rows,
                         int64_t cols, Hyper h) {
  const double lr = learning_rate(sums, rows * cols, h);
  const double row_mean = sums[0] / static_cast<double>(rows);
  GLAM_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, c = i - r * cols;
    const double la = lr * sqrt(row_mean / static_cast<double>(row_state[r]));
    param[i] = static_cast<T>(param[i] - la * b[c] * grad[i]);
  }
}

// Unfactored: the state, and per-block partial sums of param^2 and U^2.
template <class T>
__global__ void af_full(const T* param, const T* grad, T* state, double* partial, int64_t n, Hyper h) {
  double ps = 0, us = 0;
  GLAM_GRID_STRIDE(i, n) {
    const double g = grad[i], w = param[i];
    T s = static_cast<T>(h.beta2 * state[i] + (1 - h.beta2) * (g * g + h.eps1));
    state[i] = s;
    const double u = g / sqrt(static_cast<double>(s));
    us += u * u;
    ps += w * w;
  }
  ps = block_sum(ps);
  us = block_sum(us);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = ps;
    partial[gridDim.x + blockIdx.x] = us;
  }
}

template <class T>
__global__ void af_apply_full(T* param, const T* grad, const T* state, const double* sums, int64_t n, Hyper h) {
  const double lr = learning_rate(sums, n, h);
  GLAM_GRID_STRIDE(i, n) param[i] = static_cast<T>(param[i] - lr * grad[i] / sqrt(static_cast<double>(state[i])));
}

}  // namespace

template <class T>
void adafactor_update(const KernelContext& ctx, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& hy) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  cudaStream_t s = stream_of(ctx);
  Hyper h{1.0 - std::pow(static_cast<double>(step), -hy.decay_exponent), hy.eps1, hy.eps2, hy.clip,
          adafactor_step_size(hy, step)};
  if (row_state && col_state) {
    const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
    // scratch: sums[4], prow[rows], urow[rows], b[cols], partial[chunks * cols]
    double* sums = static_cast<double*>(scratch(sizeof(double) * static_cast<size_t>(4 + 2 * rows + cols + chunks * cols)));
    double* prow = sums + 4;
    double* urow = prow + rows;
    double* b = urow + rows;
    double* partial = b + cols;
    af_rows<<<static_cast<unsigned>(rows), 256, 0, s>>>(param, grad, row_state, prow, cols, h);
    GLAM_CUDA_LAUNCHED();
    dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks));
    af_col_partial<<<grid, dim3(32, 8), 0, s>>>(grad, partial, rows, cols, h.eps1);
    GLAM_CUDA_LAUNCHED();
    af_cols<<<grid_for(cols, 256), 256, 0, s>>>(partial, chunks, rows, cols, col_state, b, h);
    GLAM_CUDA_LAUNCHED();
    sum_to<<<1, 1024, 0, s>>>(row_state, rows, sums);
    sum_to<<<1, 1024, 0, s>>>(prow, rows, sums + 1);
    GLAM_CUDA_LAUNCHED();
    af_update_rows<<<static_cast<unsigned>(rows), 256, 0, s>>>(grad, row_state, b, sums, urow, rows, cols);
    sum_to<<<1, 1024, 0, s>>>(urow, rows, sums + 2);
    GLAM_CUDA_LAUNCHED();
    af_apply<<<grid_for(n, 256), 256, 0, s>>>(param, grad, row_state, b, sums, rows, cols, h);
    GLAM_CUDA_LAUNCHED();
    return;
  }
  const unsigned blocks = std::min<unsigned>(grid_for(n, 256), 1024);
  double* sums = static_cast<double*>(scratch(sizeof(double) * (4 + 2 * static_cast<size_t>(blocks))));
  double* partial = sums + 4;
  af_full<<<blocks, 256, 0, s>>>(param, grad, full_state, partial, n, h);
  GLAM_CUDA_LAUNCHED();
  sum_to<<<1, 1024, 0, s>>>(partial, blocks, sums + 1);
  sum_to<<<1, 1024, 0, s>>>(partial + blocks, blocks, sums + 2);
  GLAM_CUDA_LAUNCHED();
  af_apply_full<<<grid_for(n, 256), 256, 0, s>>>(param, grad, full_state, sums, n, h);
  GLAM_CUDA_LAUNCHED();
}

template void adafactor_update<float>(const KernelContext&, float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, int64_t, const AdafactorHyper&);
template void adafactor_update<double>(const KernelContext&, double*, const double*, double*, double*, double*,
                                       int64_t, int64_t, int64_t, const AdafactorHyper&);

}  // namespace glam::kernels::cuda
