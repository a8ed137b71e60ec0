#include "loss.h"

#include <algorithm>
#include <cmath>

#include "cpu/parallel.h"

namespace glam::kernels {

template <class T>
void softmax_xent_forward_backward(const KernelContext&, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, T* dlogits) {
  GLAM_PARALLEL_FOR(tokens / 8)
  for (int64_t t = 0; t < tokens; ++t) {
    const T* x = logits + t * vocab;
    T* d = dlogits + t * vocab;
    T mx = x[0];
    for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, x[v]);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(x[v] - mx));
    double z = static_cast<double>(mx) + std::log(sum);
    int32_t y = targets[t];
    ce[t] = static_cast<T>(z - static_cast<double>(x[y]));
    lse[t] = static_cast<T>(z);
    // d/dx_v of ce + z_weight * z^2 = softmax_v - [v == y] + 2 z_weight z softmax_v
    T coef = static_cast<T>(grad_scale * (1.0 + 2.0 * z_weight * z));
    T zt = static_cast<T>(z);
    for (int64_t v = 0; v < vocab; ++v) d[v] = coef * std::exp(x[v] - zt);
    d[y] -= static_cast<T>(grad_scale);
  }
}

#define GLAM_INSTANTIATE(T)                                                                                      \
  template void softmax_xent_forward_backward<T>(const KernelContext&, const T*, const int32_t*, int64_t, int64_t, \
                                                 double, double, T*, T*, T*);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels
