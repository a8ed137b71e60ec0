// Adafactor for a run of same-shape parameter tensors on the GPU (one weight, or the local experts of
// one), the CPU's arithmetic (float64 sums and factors) in a few passes, with no host round trip:
// row sums (and the parameter's sum of squares) per row, column sums over row chunks then over the
// chunks, block sums of the small vectors, and the update, which computes the step size from those
// sums. Every factored kernel takes its tensor from the grid's last dimension, so a run of experts
// costs the launches of one tensor.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

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

// The block's row (blockIdx.x) of tensor blockIdx.y: its sums of g^2 + eps1 (g2) and of w^2 (w2),
// on every thread.
template <class T>
__device__ void row_sums(const T* param, const T* grad, const Run& run, double eps1, double& g2, double& w2) {
  const int64_t m = blockIdx.y, r = blockIdx.x, cols = run.cols;
  const T* g = grad + m * run.n() + r * cols;
  const T* w = param + m * run.n() + r * cols;
  double acc = 0, ps = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    double gv = g[c], wv = w[c];
    acc += gv * gv + eps1;
    ps += wv * wv;
  }
  g2 = block_sum(acc);
  w2 = block_sum(ps);
}

// w -= lr a_i b_j g_ij with a_i = sqrt(mean R / R_i), over tensor blockIdx.y of the run: rows strided
// over the blocks, columns over the threads, so a_i is computed once per row and thread rather than
// per element (with a 64-bit division for the row).
template <class T>
__device__ void apply_factored(T* param, const T* grad, const T* row_state, const double* b, const Run& run,
                               double lr, double row_mean) {
  const int64_t m = blockIdx.y, cols = run.cols;
  const T* rs = row_state + m * run.state_stride;
  const double* bm = b + m * cols;
  for (int64_t r = blockIdx.x; r < run.rows; r += gridDim.x) {
    const double la = lr * sqrt(row_mean / static_cast<double>(rs[r]));
    T* w = param + m * run.n() + r * cols;
    const T* g = grad + m * run.n() + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) w[c] = static_cast<T>(w[c] - la * bm[c] * g[c]);
  }
}

// Blocks for apply_factored: a row each, at most enough to fill the GPU once with all `tensors`.
unsigned apply_blocks(int64_t rows, unsigned tensors) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(rows, 4096 / tensors)));
}

template <class T>
__global__ void af_rows(T* param, const T* grad, T* row_state, double* prow, Run run, Hyper h) {
  const int64_t m = blockIdx.y, r = blockIdx.x, cols = run.cols;
  double acc, ps;
  row_sums(param, grad, run, h.eps1, acc, ps);
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

// Block (32, 8) over 32 columns of tensor blockIdx.y.
template <class T>
__global__ void af_cols(const double* partial, T* col_state, double* b, Run run, Hyper h) {
  const int64_t m = blockIdx.y, cols = run.cols, c = blockIdx.x * int64_t{32} + threadIdx.x;
  const double acc = column_sum_of_chunks(partial + m * run.chunks * cols, run.chunks, cols);
  if (threadIdx.y != 0 || c >= cols) return;
  T* cs = col_state + m * run.state_stride;
  T v = static_cast<T>(h.beta2 * cs[c] + (1 - h.beta2) * acc / static_cast<double>(run.rows));
  cs[c] = v;
  b[m * cols + c] = 1.0 / sqrt(static_cast<double>(v));
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
  const double* sm = sums + 4 * blockIdx.y;
  apply_factored(param, grad, row_state, b, run, learning_rate(sm, run.n(), h), sm[0] / static_cast<double>(run.rows));
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
  double* sums = static_cast<double*>(scratch(s, sizeof(double) * per_tensor * static_cast<size_t>(count)));
  double* prow = sums + 4 * count;
  double* urow = prow + rows * count;
  double* b = urow + rows * count;
  double* partial = b + cols * count;
  const unsigned tensors = static_cast<unsigned>(count);
  af_rows<<<dim3(static_cast<unsigned>(rows), tensors), threads_for(cols, 256), 0, s>>>(param, grad, row_state, prow, run, h);
  GLAM_CUDA_LAUNCHED();
  dim3 grid(column_blocks(cols), static_cast<unsigned>(chunks), tensors);
  af_col_partial<<<grid, dim3(32, 8), 0, s>>>(grad, partial, run, h.eps1);
  GLAM_CUDA_LAUNCHED();
  af_cols<<<dim3(column_blocks(cols), tensors), dim3(32, 8), 0, s>>>(partial, col_state, b, run, h);
  GLAM_CUDA_LAUNCHED();
  sum_to<<<tensors, threads_for(rows, 1024), 0, s>>>(row_state, rows, run.state_stride, sums, 4);
  sum_to<<<tensors, threads_for(rows, 1024), 0, s>>>(prow, rows, rows, sums + 1, 4);
  GLAM_CUDA_LAUNCHED();
  af_update_rows<<<dim3(static_cast<unsigned>(rows), tensors), threads_for(cols, 256), 0, s>>>(grad, row_state, b, sums, urow, run);
  sum_to<<<tensors, threads_for(rows, 1024), 0, s>>>(urow, rows, rows, sums + 2, 4);
  GLAM_CUDA_LAUNCHED();
  // Enough blocks per tensor to fill the GPU once with all of them.
  af_apply<<<dim3(apply_blocks(rows, tensors), tensors), 256, 0, s>>>(param, grad, row_state, b, sums, run, h);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void update_full(cudaStream_t s, T* param, const T* grad, T* full_state, int64_t n, const Hyper& h) {
  const unsigned blocks = std::min<unsigned>(grid_for(n, 256), 1024);
  double* sums = static_cast<double*>(scratch(s, sizeof(double) * (4 + 2 * static_cast<size_t>(blocks))));
  double* partial = sums + 4;
  af_full<<<blocks, 256, 0, s>>>(param, grad, full_state, partial, n, h);
  GLAM_CUDA_LAUNCHED();
  sum_to<<<1, threads_for(blocks, 1024), 0, s>>>(partial, blocks, 0, sums + 1, 0);
  sum_to<<<1, threads_for(blocks, 1024), 0, s>>>(partial + blocks, blocks, 0, sums + 2, 0);
  GLAM_CUDA_LAUNCHED();
  af_apply_full<<<grid_for(n, 256), 256, 0, s>>>(param, grad, full_state, sums, n, h);
  GLAM_CUDA_LAUNCHED();
}

// ---- Tensor parallelism: the CPU's two rounds of partial sums (kernels/cpu/adafactor.cpp), each
// combined over the slices on the host. One weight's stacked slices share the launches, as in a run.

// Round 1: per row, the sum of g^2 + eps1 (to row_out + m x row_stride) and of w^2 (to w2row).
template <class T>
__global__ void af_slice_rows(const T* param, const T* grad, Run run, double eps1, double* row_out, int64_t row_stride,
                              double* w2row) {
  const int64_t m = blockIdx.y, r = blockIdx.x;
  double acc, ps;
  row_sums(param, grad, run, eps1, acc, ps);
  if (threadIdx.x == 0) {
    row_out[m * row_stride + r] = acc;
    w2row[m * run.rows + r] = ps;
  }
}

// Round 1: per column, the sum of g^2 + eps1 over the row chunks' partial sums; block (32, 8).
__global__ void af_slice_cols(const double* partial, Run run, double* col_out, int64_t col_stride) {
  const int64_t m = blockIdx.y, cols = run.cols, c = blockIdx.x * int64_t{32} + threadIdx.x;
  const double acc = column_sum_of_chunks(partial + m * run.chunks * cols, run.chunks, cols);
  if (threadIdx.y == 0 && c < cols) col_out[m * col_stride + c] = acc;
}

// Round 2: the decayed states of the slice's rows and columns from the whole matrices' sums, and
// b_j = 1 / sqrt(C_j).
template <class T>
__global__ void af_slice_states(T* row_state, T* col_state, const double* row_sum, int64_t row_stride,
                                const double* col_sum, int64_t col_stride, double* b, Run run, double beta2,
                                int64_t all_rows, int64_t all_cols) {
  const int64_t m = blockIdx.y, rows = run.rows, cols = run.cols;
  GLAM_GRID_STRIDE(i, rows + cols) {
    if (i < rows) {
      T& rs = row_state[m * run.state_stride + i];
      rs = static_cast<T>(beta2 * rs + (1 - beta2) * row_sum[m * row_stride + i] / static_cast<double>(all_cols));
    } else {
      const int64_t c = i - rows;
      T& cs = col_state[m * run.state_stride + c];
      const T v = static_cast<T>(beta2 * cs + (1 - beta2) * col_sum[m * col_stride + c] / static_cast<double>(all_rows));
      cs = v;
      b[m * cols + c] = 1.0 / sqrt(static_cast<double>(v));
    }
  }
}

// Round 2: per row, sum_j g_ij^2 / C_j / R_i (the update's sum of squares before the factor mean R).
template <class T>
__global__ void af_slice_update_rows(const T* grad, const T* row_state, const double* b, Run run, double* per_row) {
  const int64_t m = blockIdx.y, r = blockIdx.x, cols = run.cols;
  const T* g = grad + m * run.n() + r * cols;
  const double* bm = b + m * cols;
  double acc = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const double u = g[c] * bm[c];
    acc += u * u;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) per_row[m * run.rows + r] = acc / static_cast<double>(row_state[m * run.state_stride + r]);
}

// The update, with each matrix's step size and mean R from the host (coef[2m], coef[2m + 1]).
template <class T>
__global__ void af_slice_apply(T* param, const T* grad, const T* row_state, const double* b, const double* coef,
                               Run run) {
  const double* cm = coef + 2 * blockIdx.y;
  apply_factored(param, grad, row_state, b, run, cm[0], cm[1]);
}

// One sliced weight in the rounds' buffers: `count` matrices, sums at these offsets (doubles) for its
// first matrix, the next ones a matrix's share further.
template <class T>
struct SliceRun {
  const SlicedWeight<T>* wt;
  Run run;
  bool by_rows;
  int64_t all_rows, all_cols;
  int64_t shared, local;  // round 1: the split dimension's sums and w^2 (shared), the other dimension's (local)
  int64_t unit;           // its first matrix's index among all matrices (round 2)
  int64_t b;              // its first matrix's 1 / sqrt(C_j) (round 2 and the update)
  int64_t split_sums() const { return by_rows ? run.cols : run.rows; }
  int64_t split_stride() const { return split_sums() + 1; }  // a matrix's shared sums, then its w^2
  int64_t own_sums() const { return by_rows ? run.rows : run.cols; }
};

}  // namespace

template <class T>
void adafactor_update_sliced(const KernelContext& ctx, const std::vector<SlicedWeight<T>>& weights, int64_t step,
                             const AdafactorHyper& hy, const ShardReduce& reduce) {
  cudaStream_t s = stream_of(ctx);
  std::vector<SliceRun<T>> runs;
  int64_t shared_size = 0, local_size = 0, units = 0, most_rows = 0, most_partial = 0, b_size = 0;
  for (const auto& wt : weights) {
    if (wt.count <= 0 || wt.rows <= 0 || wt.cols <= 0) continue;  // nothing to update (no launch of size 0)
    if (wt.count > 65535)  // the grid's second dimension
      throw std::invalid_argument("adafactor_update_sliced: " + std::to_string(wt.count) +
                                  " stacked matrices in one weight, more than the 65,535 the CUDA kernels take");
    SliceRun<T> sr{&wt, Run{wt.rows, wt.cols, (wt.rows + kChunkRows - 1) / kChunkRows, wt.state_stride},
                   wt.axis == SliceAxis::kRows, 0, 0, shared_size, local_size, units, b_size};
    sr.all_rows = sr.by_rows ? wt.rows * wt.slices : wt.rows;
    sr.all_cols = sr.by_rows ? wt.cols : wt.cols * wt.slices;
    shared_size += wt.count * sr.split_stride();
    local_size += wt.count * sr.own_sums();
    units += wt.count;
    most_rows = std::max(most_rows, wt.count * wt.rows);
    most_partial = std::max(most_partial, wt.count * sr.run.chunks * wt.cols);
    b_size += wt.count * wt.cols;
    runs.push_back(sr);
  }
  if (units == 0) {  // the slices' collectives all the same, as on the CPU
    double none = 0;
    reduce.sum(&none, 0);
    reduce.sum(&none, 0);
    return;
  }
  // Device: shared | local | per-row scratch | column partials | b | second round (2 per matrix, then
  // the sums of R of matrices split by columns, whole here) | step sizes and mean R (2 per matrix).
  StreamBuffer buffer(s, sizeof(double) * static_cast<size_t>(shared_size + local_size + most_rows + most_partial +
                                                              b_size + 3 * units + 2 * units));
  double* shared = buffer.doubles();
  double* local = shared + shared_size;
  double* per_row = local + local_size;
  double* partial = per_row + most_rows;
  double* b = partial + most_partial;
  double* second = b + b_size;
  double* coef = second + 3 * units;
  const double beta2 = 1.0 - std::pow(static_cast<double>(step), -hy.decay_exponent);

  // Round 1.
  for (const auto& sr : runs) {
    const SlicedWeight<T>& wt = *sr.wt;
    const unsigned count = static_cast<unsigned>(wt.count);
    const int64_t split_stride = sr.split_stride();
    double* split = shared + sr.shared;
    double* own = local + sr.local;
    double* row_out = sr.by_rows ? own : split;
    double* col_out = sr.by_rows ? split : own;
    af_slice_rows<<<dim3(static_cast<unsigned>(wt.rows), count), threads_for(wt.cols, 256), 0, s>>>(
        wt.param, wt.grad, sr.run, hy.eps1, row_out, sr.by_rows ? wt.rows : split_stride, per_row);
    GLAM_CUDA_LAUNCHED();
    dim3 grid(column_blocks(wt.cols), static_cast<unsigned>(sr.run.chunks), count);
    af_col_partial<<<grid, dim3(32, 8), 0, s>>>(wt.grad, partial, sr.run, hy.eps1);
    GLAM_CUDA_LAUNCHED();
    af_slice_cols<<<dim3(column_blocks(wt.cols), count), dim3(32, 8), 0, s>>>(partial, sr.run, col_out,
                                                                     sr.by_rows ? split_stride : wt.cols);
    GLAM_CUDA_LAUNCHED();
    sum_to<<<count, threads_for(wt.rows, 1024), 0, s>>>(per_row, wt.rows, wt.rows, split + sr.split_sums(), split_stride);
    GLAM_CUDA_LAUNCHED();
  }
  std::vector<double> host(static_cast<size_t>(shared_size));
  to_host(host.data(), shared, shared_size, s);
  reduce.sum(host.data(), shared_size);
  to_device(shared, host.data(), shared_size, s);

  // Round 2.
  GLAM_CUDA_CHECK(cudaMemsetAsync(second, 0, sizeof(double) * 3 * static_cast<size_t>(units), s));
  for (const auto& sr : runs) {
    const SlicedWeight<T>& wt = *sr.wt;
    const unsigned count = static_cast<unsigned>(wt.count);
    const int64_t split_stride = sr.split_stride();
    const double* split = shared + sr.shared;
    const double* own = local + sr.local;
    double* bw = b + sr.b;
    af_slice_states<<<dim3(grid_for(wt.rows + wt.cols, 256), count), 256, 0, s>>>(
        wt.row_state, wt.col_state, sr.by_rows ? own : split, sr.by_rows ? wt.rows : split_stride,
        sr.by_rows ? split : own, sr.by_rows ? split_stride : wt.cols, bw, sr.run, beta2, sr.all_rows, sr.all_cols);
    GLAM_CUDA_LAUNCHED();
    af_slice_update_rows<<<dim3(static_cast<unsigned>(wt.rows), count), threads_for(wt.cols, 256), 0, s>>>(wt.grad, wt.row_state, bw, sr.run,
                                                                                    per_row);
    GLAM_CUDA_LAUNCHED();
    sum_to<<<count, threads_for(wt.rows, 1024), 0, s>>>(per_row, wt.rows, wt.rows, second + 2 * sr.unit, 2);
    // The sum of R: over the slices when split by rows, this slice's whole rows otherwise.
    double* r_sum = sr.by_rows ? second + 2 * sr.unit + 1 : second + 2 * units + sr.unit;
    sum_to<<<count, threads_for(wt.rows, 1024), 0, s>>>(wt.row_state, wt.rows, wt.state_stride, r_sum, sr.by_rows ? 2 : 1);
    GLAM_CUDA_LAUNCHED();
  }
  std::vector<double> sums(3 * static_cast<size_t>(units)), coefs(2 * static_cast<size_t>(units));
  to_host(sums.data(), second, 3 * units, s);
  reduce.sum(sums.data(), 2 * units);
  for (const auto& sr : runs)
    for (int64_t m = 0; m < sr.wt->count; ++m) {
      const auto k = static_cast<size_t>(sr.unit + m);
      const double r_sum = sr.by_rows ? sums[2 * k + 1] : sums[2 * static_cast<size_t>(units) + k];
      const double n = static_cast<double>(sr.all_rows * sr.all_cols);
      const double row_mean = r_sum / static_cast<double>(sr.all_rows);
      const double w2 = host[static_cast<size_t>(sr.shared + m * sr.split_stride() + sr.split_sums())];
      coefs[2 * k] = adafactor_scaled_step(hy, step, std::sqrt(w2 / n), std::sqrt(row_mean * sums[2 * k] / n));
      coefs[2 * k + 1] = row_mean;
    }
  to_device(coef, coefs.data(), 2 * units, s);
  for (const auto& sr : runs) {
    const SlicedWeight<T>& wt = *sr.wt;
    const unsigned count = static_cast<unsigned>(wt.count);
    af_slice_apply<<<dim3(apply_blocks(wt.rows, count), count), 256, 0, s>>>(wt.param, wt.grad, wt.row_state,
                                                                            b + sr.b, coef + 2 * sr.unit, sr.run);
    GLAM_CUDA_LAUNCHED();
  }
}

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
template void adafactor_update_sliced<float>(const KernelContext&, const std::vector<SlicedWeight<float>>&, int64_t,
                                             const AdafactorHyper&, const ShardReduce&);
template void adafactor_update_sliced<double>(const KernelContext&, const std::vector<SlicedWeight<double>>&, int64_t,
                                              const AdafactorHyper&, const ShardReduce&);

}  // namespace glam::kernels::cuda
