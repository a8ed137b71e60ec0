#pragma once
// Adafactor over the model's parameter buffer: one kernels::adafactor_update per weight, which
// updates each of its stacked experts as its own matrix (its own factors and step size), factored
// second moments for matrices, full ones for vectors. Every rank updates the replicated tensors
// identically (gradients were reduced) and its own experts. Under tensor parallelism a rank updates its
// slices of the sliced matrices as the whole matrices would be (adafactor_update_sliced, whose partial
// sums `slices` combines over the tensor-parallel ranks).
#include <cstdint>
#include <vector>

#include "adafactor.h"
#include "core/device_buffer.h"
#include "core/op_timer.h"
#include "kernel_context.h"
#include "model/layout.h"

namespace glam::exec {

template <class T>
class AdafactorOptimizer {
 public:
  AdafactorOptimizer(const ModelLayout& layout, kernels::AdafactorHyper hyper = {});

  // Applies update number `step` (1-based). `slices`: needed when the layout has sliced tensors.
  void update(const kernels::KernelContext& ctx, T* params, const T* grads, int64_t step, OpTimer* timer = nullptr,
              const kernels::ShardReduce* slices = nullptr);

  // The state of matrix `matrix` of parameter `index`: its offset in state() and its size
  // (rows + cols when factored, rows * cols otherwise; the rank's rows and columns of a slice).
  int64_t state_offset(size_t index, int64_t matrix) const;
  int64_t state_size(size_t index) const;
  bool factored(size_t index) const;
  T* state() { return state_.data(); }
  int64_t state_elements() const { return state_.size(); }
  kernels::Backend state_backend() const { return state_.backend(); }  // where state() lives
  const kernels::AdafactorHyper& hyper() const { return hyper_; }

 private:
  const ModelLayout& layout_;
  kernels::AdafactorHyper hyper_;
  std::vector<int64_t> offsets_;
  DeviceBuffer<T> state_;
};

}  // namespace glam::exec
