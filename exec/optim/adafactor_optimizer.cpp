#include "optim/adafactor_optimizer.h"

#include <stdexcept>
#include <string>

#include "op_names.h"

namespace glam::exec {

template <class T>
AdafactorOptimizer<T>::AdafactorOptimizer(const ModelLayout& layout, kernels::AdafactorHyper hyper)
    : layout_(layout), hyper_(hyper) {
  int64_t off = 0;
  for (size_t i = 0; i < layout_.params.size(); ++i) {
    offsets_.push_back(off);
    off += state_size(i) * layout_.params[i].count;
  }
  state_.resize(off);
}

template <class T>
bool AdafactorOptimizer<T>::factored(size_t index) const {
  const ParamInfo& p = layout_.params[index];
  return p.full_rows() > 1 && p.full_cols() > 1;  // a slice is factored as its whole matrix is
}

template <class T>
int64_t AdafactorOptimizer<T>::state_size(size_t index) const {
  const ParamInfo& p = layout_.params[index];
  return factored(index) ? p.rows + p.cols : p.rows * p.cols;
}

template <class T>
int64_t AdafactorOptimizer<T>::state_offset(size_t index, int64_t matrix) const {
  return offsets_[index] + matrix * state_size(index);
}

template <class T>
void AdafactorOptimizer<T>::update(const kernels::KernelContext& ctx, T* params, const T* grads, int64_t step,
                                   OpTimer* timer, const kernels::ShardReduce* slices) {
  static const std::string id = op_name::kOptimizer;
  auto sc = OpTimer::time(timer, id, 12.0 * static_cast<double>(layout_.total_elements),
                          3.0 * sizeof(T) * static_cast<double>(layout_.total_elements));
  // One call per weight: a weight's local experts lie one after another in the parameters, the
  // gradients and the state, so the kernels take them all at once. The sliced weights go in one call,
  // whose sums over the slices are two collectives for all of them.
  std::vector<kernels::SlicedWeight<T>> sliced;
  for (size_t i = 0; i < layout_.params.size(); ++i) {
    const ParamInfo& p = layout_.params[i];
    T* w = params + p.offset;
    const T* g = grads + p.offset;
    T* s = state_.data() + state_offset(i, 0);
    if (p.sliced()) {
      if (!slices || !factored(i))
        throw std::logic_error("AdafactorOptimizer: sliced tensor " + p.name + " needs a factored state and slices");
      sliced.push_back({w, g, s, s + p.rows, p.rows, p.cols, p.slice_axis, p.slices, p.count, state_size(i)});
    } else if (factored(i)) {
      kernels::adafactor_update<T>(ctx, w, g, s, s + p.rows, nullptr, p.rows, p.cols, step, hyper_, p.count,
                                   state_size(i));
    } else {
      kernels::adafactor_update<T>(ctx, w, g, nullptr, nullptr, s, p.rows, p.cols, step, hyper_, p.count,
                                   state_size(i));
    }
  }
  if (!sliced.empty()) kernels::adafactor_update_sliced<T>(ctx, sliced, step, hyper_, *slices);
}

template class AdafactorOptimizer<float>;
template class AdafactorOptimizer<double>;

}  // namespace glam::exec
