#include "adafactor.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>
#include "cpu/dispatch.h"

namespace glam::kernels {

double adafactor_step_size(const AdafactorHyper& h, int64_t step) {
  return std::min(h.lr_max, 1.0 / std::sqrt(static_cast<double>(step)));
}

namespace {

// One tensor.
template <class T>
void update_one(T* param, const T* grad, T* row_state, T* col_state, T* full_state, int64_t rows, int64_t cols,
                int64_t step, const AdafactorHyper& h) {
  const double beta2 = 1.0 - std::pow(static_cast<double>(step), -h.decay_exponent);
  const int64_t n = rows * cols;
  double param_ss = 0;
  for (int64_t i = 0; i < n; ++i) param_ss += static_cast<double>(param[i]) * param[i];
  const double param_rms = std::sqrt(param_ss / static_cast<double>(n));
  double update_ss = 0;
  if (row_state && col_state) {
    // R_i, C_j: decayed means of g^2 + eps1 over columns and rows (row-major passes only)
    std::vector<double> col_acc(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = grad + r * cols;
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) {
        double g2 = static_cast<double>(g[c]) * g[c] + h.eps1;
        acc += g2;
        col_acc[static_cast<size_t>(c)] += g2;
      }
      row_state[r] = static_cast<T>(beta2 * row_state[r] + (1 - beta2) * acc / static_cast<double>(cols));
    }
    for (int64_t c = 0; c < cols; ++c)
      col_state[c] = static_cast<T>(beta2 * col_state[c] + (1 - beta2) * col_acc[static_cast<size_t>(c)] / static_cast<double>(rows));
    double row_mean = 0;
    for (int64_t r = 0; r < rows; ++r) row_mean += row_state[r];
    row_mean /= static_cast<double>(rows);
    // U_ij = g_ij / sqrt(R_i C_j / mean R) = g_ij * a_i * b_j
    std::vector<double> a(static_cast<size_t>(rows)), b(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) a[static_cast<size_t>(r)] = std::sqrt(row_mean / static_cast<double>(row_state[r]));
    for (int64_t c = 0; c < cols; ++c) b[static_cast<size_t>(c)] = 1.0 / std::sqrt(static_cast<double>(col_state[c]));
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = grad + r * cols;
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) {
        double u = g[c] * b[static_cast<size_t>(c)];
        acc += u * u;
      }
      update_ss += acc * a[static_cast<size_t>(r)] * a[static_cast<size_t>(r)];
    }
    double update_rms = std::sqrt(update_ss / static_cast<double>(n));
    double lr = adafactor_step_size(h, step) * std::max(h.eps2, param_rms) / std::max(1.0, update_rms / h.clip);
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = grad + r * cols;
      T* w = param + r * cols;
      double la = lr * a[static_cast<size_t>(r)];
      for (int64_t c = 0; c < cols; ++c) w[c] = static_cast<T>(w[c] - la * b[static_cast<size_t>(c)] * g[c]);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    full_state[i] = static_cast<T>(beta2 * full_state[i] + (1 - beta2) * (static_cast<double>(grad[i]) * grad[i] + h.eps1));
    double u = grad[i] / std::sqrt(static_cast<double>(full_state[i]));
    update_ss += u * u;
  }
  double update_rms = std::sqrt(update_ss / static_cast<double>(n));
  double lr = adafactor_step_size(h, step) * std::max(h.eps2, param_rms) / std::max(1.0, update_rms / h.clip);
  for (int64_t i = 0; i < n; ++i)
    param[i] = static_cast<T>(param[i] - lr * grad[i] / std::sqrt(static_cast<double>(full_state[i])));
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

template void adafactor_update<float>(const KernelContext&, float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);
template void adafactor_update<double>(const KernelContext&, double*, const double*, double*, double*, double*,
                                       int64_t, int64_t, int64_t, const AdafactorHyper&, int64_t, int64_t);

}  // namespace glam::kernels
