#include "adafactor.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace glam::kernels {

double adafactor_step_size(const AdafactorHyper& h, int64_t step) {
  return std::min(h.lr_max, 1.0 / std::sqrt(static_cast<double>(step)));
}

double adafactor_scaled_step(const AdafactorHyper& h, int64_t step, double param_rms, double update_rms) {
  return adafactor_step_size(h, step) * std::max(h.eps2, param_rms) / std::max(1.0, update_rms / h.clip);
}

namespace {

// Rows are processed in blocks of a fixed size whose partial sums are kept apart and added in block
// order, so that the threads share the work and the result does not depend on their number.
constexpr int64_t kRowBlock = 32;

double root_mean(double sum_of_squares, int64_t n) { return std::sqrt(sum_of_squares / static_cast<double>(n)); }


// A matrix with factored second moments, in two sweeps over the gradient and the weights.
// The update's sum of squares needs no sweep of its own:
//   sum_ij (g_ij a_i b_j)^2 = mean(R) sum_j (1 / C_j) sum_i g_ij^2 / R_i,
// and R_i is known as soon as row i has been summed.
template <class T>
void update_factored(T* param, const T* grad, T* row_state, T* col_state, int64_t rows, int64_t cols, int64_t step,
                     double beta2, const AdafactorHyper& h) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  auto block_rows = [&](int64_t blk) { return std::pair{blk * kRowBlock, std::min(rows, (blk + 1) * kRowBlock)}; };
  auto sq = [](T x) { return static_cast<double>(x) * static_cast<double>(x); };
  // Per block, partial rows of column sums: of g^2 + eps1, and of g^2 / R_i. Per row: w^2.
  std::vector<double> col_g2(static_cast<size_t>(blocks * cols), 0.0), col_g2_over_r(col_g2.size(), 0.0),
      row_w2(static_cast<size_t>(rows));
  GLAM_PARALLEL_FOR(blocks)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    double* cg = col_g2.data() + blk * cols;
    double* cr = col_g2_over_r.data() + blk * cols;
    for (auto [r, end] = block_rows(blk); r < end; ++r) {
      const T* g = grad + r * cols;
      const T* w = param + r * cols;
      // R_i: the decayed mean of g^2 + eps1 over the row (stored in T, and used as stored)
      const double g2_sum = cpu::sum_over<double>(cols, [&](int64_t c) { return sq(g[c]) + h.eps1; });
      row_state[r] = static_cast<T>(beta2 * row_state[r] + (1 - beta2) * g2_sum / static_cast<double>(cols));
      const double inv_r = 1.0 / static_cast<double>(row_state[r]);
      for (int64_t c = 0; c < cols; ++c) {
        cg[c] += sq(g[c]) + h.eps1;
        cr[c] += sq(g[c]) * inv_r;
      }
      row_w2[static_cast<size_t>(r)] = cpu::sum_over<double>(cols, [&](int64_t c) { return sq(w[c]); });
    }
  }
  // C_j: the decayed mean of g^2 + eps1 over the column; the blocks' partial sums in block order.
  std::vector<double> col_sum(static_cast<size_t>(cols), 0.0), col_sum_over_r(static_cast<size_t>(cols), 0.0);
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t c = 0; c < cols; ++c) {
      col_sum[static_cast<size_t>(c)] += col_g2[static_cast<size_t>(blk * cols + c)];
      col_sum_over_r[static_cast<size_t>(c)] += col_g2_over_r[static_cast<size_t>(blk * cols + c)];
    }
  for (int64_t c = 0; c < cols; ++c)
    col_state[c] = static_cast<T>(beta2 * col_state[c] + (1 - beta2) * col_sum[static_cast<size_t>(c)] / static_cast<double>(rows));
  const double param_rms = root_mean(cpu::sum_of<double>(row_w2.data(), rows), rows * cols);
  const double row_mean = cpu::sum_of<double>(row_state, rows) / static_cast<double>(rows);
  // U_ij = g_ij / sqrt(R_i C_j / mean R) = g_ij * a_i * b_j
  std::vector<double> a(static_cast<size_t>(rows)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) a[static_cast<size_t>(r)] = std::sqrt(row_mean / static_cast<double>(row_state[r]));
  for (int64_t c = 0; c < cols; ++c) b[static_cast<size_t>(c)] = 1.0 / std::sqrt(static_cast<double>(col_state[c]));
  const double update_ss = row_mean * cpu::sum_over<double>(cols, [&](int64_t c) {
                             return col_sum_over_r[static_cast<size_t>(c)] / static_cast<double>(col_state[c]);
                           });
  const double lr = adafactor_scaled_step(h, step, param_rms, root_mean(update_ss, rows * cols));
  GLAM_PARALLEL_FOR(blocks)
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (auto [r, end] = block_rows(blk); r < end; ++r) {
      const T* g = grad + r * cols;
      T* w = param + r * cols;
      const double la = lr * a[static_cast<size_t>(r)];
      for (int64_t c = 0; c < cols; ++c)
        w[c] = static_cast<T>(static_cast<double>(w[c]) - la * b[static_cast<size_t>(c)] * static_cast<double>(g[c]));
    }
}

// A vector (or any tensor without factored moments): a full second moment.
template <class T>
void update_full(T* param, const T* grad, T* full_state, int64_t n, int64_t step, double beta2, const AdafactorHyper& h) {
  const double param_rms =
      root_mean(cpu::sum_over<double>(n, [&](int64_t i) { return static_cast<double>(param[i]) * static_cast<double>(param[i]); }), n);
  double update_ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    full_state[i] = static_cast<T>(beta2 * full_state[i] + (1 - beta2) * (static_cast<double>(grad[i]) * grad[i] + h.eps1));
    double u = grad[i] / std::sqrt(static_cast<double>(full_state[i]));
    update_ss += u * u;
  }
  const double lr = adafactor_scaled_step(h, step, param_rms, root_mean(update_ss, n));
  for (int64_t i = 0; i < n; ++i)
    param[i] = static_cast<T>(param[i] - lr * grad[i] / std::sqrt(static_cast<double>(full_state[i])));
}

// One tensor.
template <class T>
void update_one(T* param, const T* grad, T* row_state, T* col_state, T* full_state, int64_t rows, int64_t cols,
                int64_t step, const AdafactorHyper& h) {
  const double beta2 = 1.0 - std::pow(static_cast<double>(step), -h.decay_exponent);
  if (row_state && col_state) update_factored(param, grad, row_state, col_state, rows, cols, step, beta2, h);
  else update_full(param, grad, full_state, rows * cols, step, beta2, h);
}

}  // namespace

template <class T>
void adafactor_update(const KernelContext& ctx, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& h, int64_t count,
                      int64_t state_stride) {
  // Tensors whose states overlap would race on the GPU and run in order here: refused on both.
  const int64_t state_size = row_state && col_state ? rows + cols : rows * cols;
  if (count > 1 && state_stride < state_size)
    throw std::invalid_argument("adafactor_update: " + std::to_string(count) + " tensors with state_stride " +
                                std::to_string(state_stride) + ", below the state size " + std::to_string(state_size));
  GLAM_CUDA_DISPATCH(ctx, adafactor_update<T>(ctx, param, grad, row_state, col_state, full_state, rows, cols, step, h,
                                              count, state_stride));
  const int64_t n = rows * cols;
  auto state = [&](T* s, int64_t m) { return s ? s + m * state_stride : nullptr; };
  for (int64_t m = 0; m < count; ++m)
    update_one(param + m * n, grad + m * n, state(row_state, m), state(col_state, m), state(full_state, m), rows, cols,
               step, h);
}

namespace {

// One matrix of a sliced weight, and where its partial sums go in the two rounds of reductions.
template <class T>
struct SliceUnit {
  T* w;
  const T* g;
  T* rs;
  T* cs;
  int64_t rows, cols, all_rows, all_cols;
  bool by_rows;
  size_t shared = 0;  // first round: sums along the split dimension, then the sum of w^2
  size_t local = 0;   // the other dimension's sums (whole on this slice)
  int64_t split_sums() const { return by_rows ? cols : rows; }
};

}  // namespace

template <class T>
void adafactor_update_sliced(const KernelContext& ctx, const std::vector<SlicedWeight<T>>& weights, int64_t step,
                             const AdafactorHyper& h, const ShardReduce& reduce) {
  for (const auto& wt : weights)
    if (wt.axis == SliceAxis::kWhole || (wt.count > 1 && wt.state_stride < wt.rows + wt.cols))
      throw std::invalid_argument("adafactor_update_sliced: a sliced matrix with separate states expected");
  GLAM_CUDA_DISPATCH(ctx, adafactor_update_sliced<T>(ctx, weights, step, h, reduce));
  std::vector<SliceUnit<T>> units;
  size_t shared_size = 0, local_size = 0;
  for (const auto& wt : weights) {
    const bool by_rows = wt.axis == SliceAxis::kRows;
    for (int64_t m = 0; m < wt.count; ++m) {
      SliceUnit<T> u{wt.param + m * wt.rows * wt.cols, wt.grad + m * wt.rows * wt.cols,
                     wt.row_state + m * wt.state_stride, wt.col_state + m * wt.state_stride, wt.rows, wt.cols,
                     by_rows ? wt.rows * wt.slices : wt.rows, by_rows ? wt.cols : wt.cols * wt.slices, by_rows};
      u.shared = shared_size, u.local = local_size;
      shared_size += static_cast<size_t>(u.split_sums() + 1);
      local_size += static_cast<size_t>(by_rows ? wt.rows : wt.cols);
      units.push_back(u);
    }
  }
  const double beta2 = 1.0 - std::pow(static_cast<double>(step), -h.decay_exponent);
  auto sq = [](T x) { return static_cast<double>(x) * static_cast<double>(x); };
  // First round: per matrix, the sums of g^2 + eps1 along the split dimension (row sums when split by
  // columns, column sums when split by rows) and the sum of w^2; the other dimension's sums are whole.
  std::vector<double> shared(shared_size, 0.0), local(local_size, 0.0);
  for (const auto& u : units) {
    double* split = shared.data() + u.shared;
    double* own = local.data() + u.local;
    // Rows in blocks whose partial column sums are added in block order, as in update_factored.
    const int64_t blocks = (u.rows + kRowBlock - 1) / kRowBlock;
    std::vector<double> row_sum(static_cast<size_t>(u.rows)), w2(static_cast<size_t>(u.rows)),
        partial(static_cast<size_t>(blocks * u.cols), 0.0);
    GLAM_PARALLEL_FOR(blocks)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      double* cp = partial.data() + blk * u.cols;
      for (int64_t r = blk * kRowBlock; r < std::min(u.rows, (blk + 1) * kRowBlock); ++r) {
        const T* g = u.g + r * u.cols;
        row_sum[static_cast<size_t>(r)] = cpu::sum_over<double>(u.cols, [&](int64_t c) { return sq(g[c]) + h.eps1; });
        w2[static_cast<size_t>(r)] = cpu::sum_over<double>(u.cols, [&](int64_t c) { return sq(u.w[r * u.cols + c]); });
        for (int64_t c = 0; c < u.cols; ++c) cp[c] += sq(g[c]) + h.eps1;
      }
    }
    double* col_sum = u.by_rows ? split : own;
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t c = 0; c < u.cols; ++c) col_sum[c] += partial[static_cast<size_t>(blk * u.cols + c)];
    std::copy(row_sum.begin(), row_sum.end(), u.by_rows ? own : split);
    split[u.split_sums()] = cpu::sum_of<double>(w2.data(), u.rows);
  }
  reduce.sum(shared.data(), static_cast<int64_t>(shared.size()));
  // The states of the slice's rows and columns; second round: per matrix, the update's partial sum of
  // squares (sum g^2 / (R_i C_j), to be scaled by mean R) and, split by rows, the partial sum of R.
  std::vector<double> second(2 * units.size(), 0.0);
  std::vector<std::vector<double>> col_scale(units.size());
  for (size_t k = 0; k < units.size(); ++k) {
    const auto& u = units[k];
    const double* split = shared.data() + u.shared;
    const double* own = local.data() + u.local;
    const double* row_sum = u.by_rows ? own : split;
    const double* col_sum = u.by_rows ? split : own;
    for (int64_t r = 0; r < u.rows; ++r)
      u.rs[r] = static_cast<T>(beta2 * u.rs[r] + (1 - beta2) * row_sum[r] / static_cast<double>(u.all_cols));
    for (int64_t c = 0; c < u.cols; ++c)
      u.cs[c] = static_cast<T>(beta2 * u.cs[c] + (1 - beta2) * col_sum[c] / static_cast<double>(u.all_rows));
    // b_j = 1 / sqrt(C_j), as update_factored has it (a square root and a division per column, not
    // per element); b_j^2 stands for 1 / C_j.
    std::vector<double>& b = col_scale[k];
    b.resize(static_cast<size_t>(u.cols));
    for (int64_t c = 0; c < u.cols; ++c) b[static_cast<size_t>(c)] = 1.0 / std::sqrt(static_cast<double>(u.cs[c]));
    std::vector<double> per_row(static_cast<size_t>(u.rows));
    GLAM_PARALLEL_FOR(u.rows / kRowBlock)
    for (int64_t r = 0; r < u.rows; ++r)
      per_row[static_cast<size_t>(r)] = cpu::sum_over<double>(u.cols, [&](int64_t c) {
                                          const double gb = static_cast<double>(u.g[r * u.cols + c]) * b[static_cast<size_t>(c)];
                                          return gb * gb;
                                        }) / static_cast<double>(u.rs[r]);
    second[2 * k] = cpu::sum_of<double>(per_row.data(), u.rows);
    second[2 * k + 1] = u.by_rows ? cpu::sum_over<double>(u.rows, [&](int64_t r) { return static_cast<double>(u.rs[r]); }) : 0;
  }
  reduce.sum(second.data(), static_cast<int64_t>(second.size()));
  for (size_t k = 0; k < units.size(); ++k) {
    const auto& u = units[k];
    const double r_sum = u.by_rows ? second[2 * k + 1]
                                   : cpu::sum_over<double>(u.rows, [&](int64_t r) { return static_cast<double>(u.rs[r]); });
    const double row_mean = r_sum / static_cast<double>(u.all_rows);
    const double update_ss = row_mean * second[2 * k];
    const double param_rms = root_mean(shared[u.shared + static_cast<size_t>(u.split_sums())], u.all_rows * u.all_cols);
    const double lr = adafactor_scaled_step(h, step, param_rms, root_mean(update_ss, u.all_rows * u.all_cols));
    GLAM_PARALLEL_FOR(u.rows / kRowBlock)
    for (int64_t r = 0; r < u.rows; ++r) {
      const double la = lr * std::sqrt(row_mean / static_cast<double>(u.rs[r]));
      const double* b = col_scale[k].data();
      T* w = u.w + r * u.cols;
      const T* g = u.g + r * u.cols;
      for (int64_t c = 0; c < u.cols; ++c)
        w[c] = static_cast<T>(static_cast<double>(w[c]) - la * b[c] * static_cast<double>(g[c]));
    }
  }
}

template void adafactor_update<float>(const KernelContext&, float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);
template void adafactor_update<double>(const KernelContext&, double*, const double*, double*, double*, double*,
                                       int64_t, int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);
template void adafactor_update_sliced<float>(const KernelContext&, const std::vector<SlicedWeight<float>>&, int64_t,
                                             const AdafactorHyper&, const ShardReduce&);
template void adafactor_update_sliced<double>(const KernelContext&, const std::vector<SlicedWeight<double>>&, int64_t,
                                              const AdafactorHyper&, const ShardReduce&);

}  // namespace glam::kernels
