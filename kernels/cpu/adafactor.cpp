#include "adafactor.h"

#include <algorithm>
#include <cmath>

namespace glam::kernels {

double adafactor_step_size(const AdafactorHyper& h, int64_t step) {
  return std::min(h.lr_max, 1.0 / std::sqrt(static_cast<double>(step)));
}

template <class T>
void adafactor_update(const KernelContext&, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& h) {
  const double beta2 = 1.0 - std::pow(static_cast<double>(step), -h.decay_exponent);
  const int64_t n = rows * cols;
  double param_ss = 0;
  for (int64_t i = 0; i < n; ++i) param_ss += static_cast<double>(param[i]) * param[i];
  double update_ss = 0;
  if (row_state && col_state) {
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(grad[r * cols + c]) * grad[r * cols + c] + h.eps1;
      row_state[r] = static_cast<T>(beta2 * row_state[r] + (1 - beta2) * acc / static_cast<double>(cols));
    }
    for (int64_t c = 0; c < cols; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += static_cast<double>(grad[r * cols + c]) * grad[r * cols + c] + h.eps1;
      col_state[c] = static_cast<T>(beta2 * col_state[c] + (1 - beta2) * acc / static_cast<double>(rows));
    }
    double row_mean = 0;
    for (int64_t r = 0; r < rows; ++r) row_mean += row_state[r];
    row_mean /= static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        double v = static_cast<double>(row_state[r]) * col_state[c] / row_mean;
        double u = grad[r * cols + c] / std::sqrt(v);
        update_ss += u * u;
      }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      full_state[i] = static_cast<T>(beta2 * full_state[i] + (1 - beta2) * (static_cast<double>(grad[i]) * grad[i] + h.eps1));
      double u = grad[i] / std::sqrt(static_cast<double>(full_state[i]));
      update_ss += u * u;
    }
  }
  double update_rms = std::sqrt(update_ss / static_cast<double>(n));
  double clip_div = std::max(1.0, update_rms / h.clip);
  double param_rms = std::sqrt(param_ss / static_cast<double>(n));
  double lr = adafactor_step_size(h, step) * std::max(h.eps2, param_rms) / clip_div;
  if (row_state && col_state) {
    double row_mean = 0;
    for (int64_t r = 0; r < rows; ++r) row_mean += row_state[r];
    row_mean /= static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        double v = static_cast<double>(row_state[r]) * col_state[c] / row_mean;
        param[r * cols + c] = static_cast<T>(param[r * cols + c] - lr * grad[r * cols + c] / std::sqrt(v));
      }
  } else {
    for (int64_t i = 0; i < n; ++i)
      param[i] = static_cast<T>(param[i] - lr * grad[i] / std::sqrt(static_cast<double>(full_state[i])));
  }
}

template void adafactor_update<float>(const KernelContext&, float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, int64_t, const AdafactorHyper&);
template void adafactor_update<double>(const KernelContext&, double*, const double*, double*, double*, double*,
                                       int64_t, int64_t, int64_t, const AdafactorHyper&);

}  // namespace glam::kernels
