#include "loss.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "cpu/fast_math.h"
#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

namespace {
// One row's losses and gradient from its largest logit `mx`, its sum of exp(x - mx) (float64, as on
// the GPU: a float32 sum over 256K terms errs by about 1e-5) and its target's logit; `y` is the target's
// index in the row, or -1 when another vocabulary slice holds it. d may alias x: x[y] is read first.
// d/dx_v of ce + z_weight * z^2 = softmax_v - [v == y] + 2 z_weight z softmax_v; the exponentials are
// recomputed (vectorized) so that each gradient element is rounded once, as on the GPU.
template <class T, class D>
void finish_row(const T* x, D* d, int64_t vocab, T mx, double sum, double target_logit, int64_t y, double z_weight,
                double grad_scale, T& ce, T& lse) {
  const double z = static_cast<double>(mx) + std::log(sum);
  ce = static_cast<T>(z - target_logit);
  lse = static_cast<T>(z);
  const T coef = static_cast<T>(grad_scale * (1.0 + 2.0 * z_weight * z) / sum);
  const T target_grad = y >= 0 ? cpu::fast_exp(x[y] - mx) * coef - static_cast<T>(grad_scale) : T(0);
  for (int64_t v = 0; v < vocab; ++v) d[v] = cpu::fast_exp(x[v] - mx) * coef;
  if (y >= 0) d[y] = target_grad;
}
}  // namespace

template <class T, class D>
void softmax_xent_forward_backward(const KernelContext& ctx, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, D* dlogits) {
  GLAM_CUDA_DISPATCH(ctx, softmax_xent_forward_backward<T, D>(ctx, logits, targets, tokens, vocab, z_weight, grad_scale,
                                                              ce, lse, dlogits));
  GLAM_PARALLEL_FOR(tokens / 8)
  for (int64_t t = 0; t < tokens; ++t) {
    const T* x = logits + t * vocab;
    const int32_t y = targets[t];
    const T mx = cpu::max_of(x, vocab);
    const double sum = cpu::sum_over<double>(vocab, [&](int64_t v) { return static_cast<double>(cpu::fast_exp(x[v] - mx)); });
    finish_row(x, dlogits + t * vocab, vocab, mx, sum, static_cast<double>(x[y]), y, z_weight, grad_scale, ce[t], lse[t]);
  }
}

template <class T, class D>
void softmax_xent_forward_backward_sliced(const KernelContext& ctx, const T* logits, const int32_t* targets,
                                          int64_t tokens, int64_t vocab, int64_t first_id, double z_weight,
                                          double grad_scale, T* ce, T* lse, D* dlogits, const ShardReduce& reduce) {
  GLAM_CUDA_DISPATCH(ctx, softmax_xent_forward_backward_sliced<T, D>(ctx, logits, targets, tokens, vocab, first_id,
                                                                     z_weight, grad_scale, ce, lse, dlogits, reduce));
  // The slice's row maxima, then the whole vocabulary's.
  std::vector<double> mx(static_cast<size_t>(tokens)), sums(static_cast<size_t>(2 * tokens), 0.0);
  GLAM_PARALLEL_FOR(tokens / 8)
  for (int64_t t = 0; t < tokens; ++t) mx[static_cast<size_t>(t)] = static_cast<double>(cpu::max_of(logits + t * vocab, vocab));
  reduce.max(mx.data(), tokens);
  // Per row: the sum of exp(x - max) over the slice, and the target's logit where the slice holds it.
  GLAM_PARALLEL_FOR(tokens / 8)
  for (int64_t t = 0; t < tokens; ++t) {
    const T* x = logits + t * vocab;
    const T m = static_cast<T>(mx[static_cast<size_t>(t)]);
    sums[static_cast<size_t>(t)] =
        cpu::sum_over<double>(vocab, [&](int64_t v) { return static_cast<double>(cpu::fast_exp(x[v] - m)); });
    const int64_t y = static_cast<int64_t>(targets[t]) - first_id;
    if (y >= 0 && y < vocab) sums[static_cast<size_t>(tokens + t)] = static_cast<double>(x[y]);
  }
  reduce.sum(sums.data(), 2 * tokens);
  GLAM_PARALLEL_FOR(tokens / 8)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t y = static_cast<int64_t>(targets[t]) - first_id;
    finish_row(logits + t * vocab, dlogits + t * vocab, vocab, static_cast<T>(mx[static_cast<size_t>(t)]),
               sums[static_cast<size_t>(t)], sums[static_cast<size_t>(tokens + t)], y >= 0 && y < vocab ? y : -1,
               z_weight, grad_scale, ce[t], lse[t]);
  }
}

#define GLAM_INSTANTIATE(T, D)                                                                                      \
  template void softmax_xent_forward_backward<T, D>(const KernelContext&, const T*, const int32_t*, int64_t, int64_t, \
                                                    double, double, T*, T*, D*);                                      \
  template void softmax_xent_forward_backward_sliced<T, D>(const KernelContext&, const T*, const int32_t*, int64_t,   \
                                                           int64_t, int64_t, double, double, T*, T*, D*,              \
                                                           const ShardReduce&);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(float, bf16)

}  // namespace glam::kernels
