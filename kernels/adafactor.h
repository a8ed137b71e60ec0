#pragma once
// Adafactor (Shazeer and Stern 2018) with beta1 = 0, for one parameter tensor of rows x cols.
// Matrices (rows > 1 and cols > 1) keep factored second moments (a row and a column average),
// vectors an unfactored one. Step t (1-based):
//   beta2 = 1 - t^-0.8;  R = beta2 R + (1-beta2) rowmean(g^2 + eps1);  C likewise over columns;
//   V = R C^T / mean(R);  U = g / sqrt(V);  U /= max(1, RMS(U) / clip);
//   rho = min(lr_max, 1/sqrt(t));  param -= rho * max(eps2, RMS(param)) * U.
#include <cstdint>
#include <vector>

#include "kernel_context.h"
#include "shard_reduce.h"

namespace glam::kernels {

struct AdafactorHyper {
  double eps1 = 1e-30;
  double eps2 = 1e-3;
  double clip = 1.0;
  double decay_exponent = 0.8;
  double lr_max = 1e-2;  // relative step size min(lr_max, 1/sqrt(t)): 0.01 for 10K steps, then 1/sqrt(t)
};

// Relative step size at step t.
double adafactor_step_size(const AdafactorHyper& h, int64_t step);
// The step applied to U at step t: the relative step size scaled by max(eps2, RMS(param)) and divided
// by max(1, RMS(U) / clip).
double adafactor_scaled_step(const AdafactorHyper& h, int64_t step, double param_rms, double update_rms);

// Factored when row_state and col_state are non-null (sizes rows and cols); otherwise full_state
// holds rows*cols values. States start at 0.
// `count` tensors of the same shape one after another (the local experts of one weight) are updated as
// `count` calls would, each with its own factors and step size, in one pass of kernels: tensor m's
// parameters and gradient start m*rows*cols after the first's, and its states m*state_stride after
// the first's (row_state, col_state or full_state). On a GPU that is a few launches per weight instead
// of a few per expert, which would make a 64-expert model's optimizer launch-bound.
template <class T>
void adafactor_update(const KernelContext& ctx, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& h, int64_t count = 1,
                      int64_t state_stride = 0);

// Tensor parallelism: one weight's slices on this rank, `count` stacked matrices of rows x cols, cut
// along `axis` from matrices split into `slices` blocks of rows or columns, with the factored state of
// the slice's own rows and columns (matrix m's at row_state / col_state + m x state_stride).
template <class T>
struct SlicedWeight {
  T* param = nullptr;
  const T* grad = nullptr;
  T* row_state = nullptr;
  T* col_state = nullptr;
  int64_t rows = 0, cols = 0;
  SliceAxis axis = SliceAxis::kWhole;
  int64_t slices = 1, count = 1, state_stride = 0;
};

// Updates every slice exactly as adafactor_update updates the whole matrices (the same factors,
// parameter RMS and update clipping). The partial sums of all the weights are combined over the slices
// together, with two calls of `reduce.sum` in all. `reduce` gets host memory on either backend.
template <class T>
void adafactor_update_sliced(const KernelContext& ctx, const std::vector<SlicedWeight<T>>& weights, int64_t step,
                             const AdafactorHyper& h, const ShardReduce& reduce);

}  // namespace glam::kernels
