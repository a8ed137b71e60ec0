// Adafactor for a run of same-shape parameter tensors on the GPU (one weight, or the local experts of
// one), the CPU's arithmetic (float64 sums and factors) in a few passes, with no host round trip:
// row sums (and the parameter's sum of squares) per row, column sums over row chunks then over the
// chunks, block sums of the small vectors, and the update, which computes the step size from those
// sums. Every factored kernel takes its tensor from the grid's last dimension, so a run of experts
// costs the launches of one tensor.
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

// Where tensor m of a run starts, for the factored kernels: n = rows * cols elements apart, states
// state_stride apart, and the scratch vectors (sums[4], prow and urow [rows], b [cols], partial
// [chunks * cols]) one after another per tensor.
struct Run {
  int64_t rows, cols, chunks, state_stride;
  __device__ int64_t n() const { return rows * cols; }
};

template <class T>
__global__ void af_rows(T* param, const T* grad, T* row_state, double* prow, Run run, Hyper h) {
  const int64_t m = blockIdx.y, r = blockIdx.x, cols = run.cols;
  const T* g = grad + m * run.n() + r * cols;
  const T* w = param + m * run.n() + r * cols;
  double acc = 0, ps = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    double gv = g[c], wv = w[c];
    acc += gv * gv + h.eps1;
    ps += wv * wv;
  }
  acc = block_sum(acc);
  ps = block_sum(ps);
  if (threadIdx.x == 0) {
    T& rs = row_state[m * run.state_stride + r];
    rs = static_cast<T>(h.beta2 * rs + (1 - h.beta2) * acc / static_cast<double>(cols));
    prow[m * run.rows + r] = ps;
  }
}

template <class T>
__global__ void af_col_partial(const T* grad, double* partial, Run run, double eps1) {
  __shared__ double sh[8][33];
  const int64_t m = blockIdx.z, rows = run.rows, cols = run.cols;
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * int64_t{kChunkRows};
  const int64_t r1 = r0 + kChunkRows < rows ? r0 + kChunkRows : rows;
  const T* g = grad + m * run.n();
  double acc = 0;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      double gv = g[r * cols + c];
      acc += gv * gv + eps1;
    }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double sum = 0;
    for (int j = 0; j < 8; ++j) sum += sh[j][threadIdx.x];
    partial[(m * run.chunks + blockIdx.y) * cols + c] = sum;
  }
}

template <class T>
__global__ void af_cols(const double* partial, T* col_state, double* b, Run run, Hyper h) {
  const int64_t m = blockIdx.y, cols = run.cols;
  const double* part = partial + m * run.chunks * cols;
  T* cs = col_state + m * run.state_stride;
  GLAM_GRID_STRIDE(c, cols) {
    double acc = 0;
    for (int64_t j = 0; j < run.chunks; ++j) acc += part[j * cols + c];
    T v = static_cast<T>(h.beta2 * cs[c] + (1 - h.beta2) * acc / static_cast<double>(run.rows));
    cs[c] = v;
    b[m * cols + c] = 1.0 / sqrt(static_cast<double>(v));
  }
}

// out[m * out_stride] = sum of x[m * x_stride ..+ n), one block per tensor m.
template <class S>
__global__ void sum_to(const S* x, int64_t n, int64_t x_stride, double* out, int64_t out_stride) {
  const int64_t m = blockIdx.x;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += static_cast<double>(x[m * x_stride + i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[m * out_stride] = acc;
}

// sums (4 per tensor): [0] sum of row_state, [1] sum of param^2, [2] sum of U^2
template <class T>
__global__ void af_update_rows(const T* grad, const T* row_state, const double* b, const double* sums, double* urow,
                               Run run) {
  const int64_t m = blockIdx.y, r = blockIdx.x, rows = run.rows, cols = run.cols;
  const T* g = grad + m * run.n() + r * cols;
  const double* bm = b + m * cols;
  double acc = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    double u = g[c] * bm[c];
    acc += u * u;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    const double row_mean = sums[4 * m] / static_cast<double>(rows);
    const double a = sqrt(row_mean / static_cast<double>(row_state[m * run.state_stride + r]));
    urow[m * rows + r] = acc * a * a;
  }
}

__device__ double learning_rate(const double* sums, int64_t n, const Hyper& h) {
  const double param_rms = sqrt(sums[1] / static_cast<double>(n));
  const double update_rms = sqrt(sums[2] / static_cast<double>(n));
  return h.step_size * fmax(h.eps2, param_rms) / fmax(1.0, update_rms / h.clip);
}

template <class T>
__global__ void af_apply(T* param, const T* grad, const T* row_state, const double* b, const double* sums, Run run,
                         Hyper h) {
  const int64_t m = blockIdx.y, rows = run.rows, cols = run.cols;
  const double* sm = sums + 4 * m;
  const double lr = learning_rate(sm, run.n(), h);
  const double row_mean = sm[0] / static_cast<double>(rows);
  T* w = param + m * run.n();
  const T* g = grad + m * run.n();
  const T* rs = row_state + m * run.state_stride;
  const double* bm = b + m * cols;
  GLAM_GRID_STRIDE(i, run.n()) {
    const int64_t r = i / cols, c = i - r * cols;
    const double la = lr * sqrt(row_mean / static_cast<double>(rs[r]));
    w[i] = static_cast<T>(w[i] - la * bm[c] * g[i]);
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

// The tensors of a factored run, `count` at a time (first), with scratch for all of them.
template <class T>
void update_factored(cudaStream_t s, T* param, const T* grad, T* row_state, T* col_state, Run run, int64_t count,
                     const Hyper& h) {
  const int64_t rows = run.rows, cols = run.cols, chunks = run.chunks;
  const size_t per_tensor = static_cast<size_t>(4 + 2 * rows + cols + chunks * cols);
  double* sums = static_cast<double*>(scratch(sizeof(double) * per_tensor * static_cast<size_t>(count)));
  double* prow = sums + 4 * count;
  double* urow = prow + rows * count;
  double* b = urow + rows * count;
  double* partial = b + cols * count;
  const unsigned tensors = static_cast<unsigned>(count);
  af_rows<<<dim3(static_cast<unsigned>(rows), tensors), 256, 0, s>>>(param, grad, row_state, prow, run, h);
  GLAM_CUDA_LAUNCHED();
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks), tensors);
  af_col_partial<<<grid, dim3(32, 8), 0, s>>>(grad, partial, run, h.eps1);
  GLAM_CUDA_LAUNCHED();
  af_cols<<<dim3(grid_for(cols, 256), tensors), 256, 0, s>>>(partial, col_state, b, run, h);
  GLAM_CUDA_LAUNCHED();
  sum_to<<<tensors, 1024, 0, s>>>(row_state, rows, run.state_stride, sums, 4);
  sum_to<<<tensors, 1024, 0, s>>>(prow, rows, rows, sums + 1, 4);
  GLAM_CUDA_LAUNCHED();
  af_update_rows<<<dim3(static_cast<unsigned>(rows), tensors), 256, 0, s>>>(grad, row_state, b, sums, urow, run);
  sum_to<<<tensors, 1024, 0, s>>>(urow, rows, rows, sums + 2, 4);
  GLAM_CUDA_LAUNCHED();
  // Enough blocks per tensor to fill the GPU once with all of them.
  const unsigned apply_blocks = std::max(1u, std::min(grid_for(rows * cols, 256), 4096u / tensors));
  af_apply<<<dim3(apply_blocks, tensors), 256, 0, s>>>(param, grad, row_state, b, sums, run, h);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void update_full(cudaStream_t s, T* param, const T* grad, T* full_state, int64_t n, const Hyper& h) {
  const unsigned blocks = std::min<unsigned>(grid_for(n, 256), 1024);
  double* sums = static_cast<double*>(scratch(sizeof(double) * (4 + 2 * static_cast<size_t>(blocks))));
  double* partial = sums + 4;
  af_full<<<blocks, 256, 0, s>>>(param, grad, full_state, partial, n, h);
  GLAM_CUDA_LAUNCHED();
  sum_to<<<1, 1024, 0, s>>>(partial, blocks, 0, sums + 1, 0);
  sum_to<<<1, 1024, 0, s>>>(partial + blocks, blocks, 0, sums + 2, 0);
  GLAM_CUDA_LAUNCHED();
  af_apply_full<<<grid_for(n, 256), 256, 0, s>>>(param, grad, full_state, sums, n, h);
  GLAM_CUDA_LAUNCHED();
}

}  // namespace

template <class T>
void adafactor_update(const KernelContext& ctx, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& hy, int64_t count,
                      int64_t state_stride) {
  const int64_t n = rows * cols;
  if (n <= 0 || count <= 0) return;
  cudaStream_t s = stream_of(ctx);
  Hyper h{1.0 - std::pow(static_cast<double>(step), -hy.decay_exponent), hy.eps1, hy.eps2, hy.clip,
          adafactor_step_size(hy, step)};
  if (row_state && col_state) {
    const Run run{rows, cols, (rows + kChunkRows - 1) / kChunkRows, state_stride};
    // As many tensors at once as 256 MB of scratch holds (the grid's last dimension allows 65,535).
    const int64_t per_tensor = 8 * (4 + 2 * rows + cols + run.chunks * cols);
    const int64_t group = std::clamp<int64_t>((int64_t{256} << 20) / per_tensor, 1, 65535);
    for (int64_t m0 = 0; m0 < count; m0 += group) {
      const int64_t k = std::min(group, count - m0);
      update_factored(s, param + m0 * n, grad + m0 * n, row_state + m0 * state_stride, col_state + m0 * state_stride,
                      run, k, h);
    }
    return;
  }
  // Unfactored tensors are vectors, one per weight (no expert has one): one at a time.
  for (int64_t m = 0; m < count; ++m) update_full(s, param + m * n, grad + m * n, full_state + m * state_stride, n, h);
}

template void adafactor_update<float>(const KernelContext&, float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);
template void adafactor_update<double>(const KernelContext&, double*, const double*, double*, double*, double*,
                                       int64_t, int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);

}  // namespace glam::kernels::cuda
