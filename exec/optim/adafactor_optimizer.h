#pragma once
// Adafactor over the model's parameter buffer: one kernels::adafactor_update per weight, which
// updates each of its stacked experts as its own matrix (its own factors and step size), factored
// second moments for matrices, full ones for vectors. Every rank updates the replicated tensors identically (gradients were reduced) and
// its own experts.
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

  // Applies update number `step` (1-based).
  void update(const kernels::KernelContext& ctx, T* params, const T* grads, int64_t step, OpTimer* timer = nullptr);

  // The state of matrix `matrix` of parameter `index`: its offset in state() and its size
  // (rows + cols when factored, rows * cols otherwise).
  int64_t state_offset(size_t index, int64_t matrix) const;
  int64_t state_size(size_t index) const;
  bool factored(size_t index) const;
  T* state() { return state_.data(); }
  int64_t state_elements() const { return state_.size(); }
  const kernels::AdafactorHyper& hyper() const { return hyper_; }

 private:
  const ModelLayout& layout_;
  kernels::AdafactorHyper hyper_;
  std::vector<int64_t> offsets_;
  DeviceBuffer<T> state_;
};

}  // namespace glam::exec
