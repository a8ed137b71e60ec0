#pragma once
// Tensor parallelism: a kernel whose result depends on a whole tensor that is split over several
// ranks (the vocabulary of the logits, the rows or columns of a weight) computes per-slice partial
// values, has the caller combine them over the slices, and goes on. The caller's functions run one
// collective each, called in the same order on every slice.
#include <cstdint>
#include <functional>

namespace glam::kernels {

// How a tensor is split over the slices: whole on each, or consecutive blocks of rows or of columns.
enum class SliceAxis { kWhole, kRows, kCols };

struct ShardReduce {
  std::function<void(double* values, int64_t n)> sum;  // in place: the sum over the slices
  std::function<void(double* values, int64_t n)> max;  // in place: the largest over the slices
};

}  // namespace glam::kernels
