// Softmax cross-entropy with z-loss, fused with its gradient: one block per token row. A row of a 256K
// vocabulary (1 MB of float32) does not stay in cache between passes, so the maximum and the sum of
// exponentials come from one online pass (each thread's running sum is rescaled when its maximum
// grows), and the gradient from a second: two reads of the logits instead of three.
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

template <class T, class D>
__global__ void xent(const T* logits, const int32_t* targets, int64_t vocab, double z_weight, double grad_scale, T* ce,
                     T* lse, D* dlogits) {
  const int64_t t = blockIdx.x;
  const T* x = logits + t * vocab;
  D* d = dlogits + t * vocab;  // may alias x: each element is read before it is written, by the same thread
  const int32_t y = targets[t];
  const T target_logit = x[y];
  T my_max = -INFINITY;
  double my_sum = 0;  // sum of exp(x - my_max) over this thread's elements
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const T xv = x[v];
    if (xv > my_max) {
      my_sum = my_sum * static_cast<double>(dexp(my_max - xv)) + 1.0;
      my_max = xv;
    } else if (xv != -INFINITY) {  // a masked (-inf) logit adds nothing; a NaN propagates
      my_sum += static_cast<double>(dexp(xv - my_max));
    }
  }
  const T mx = block_max(my_max);
  // threads with no elements, or only -inf ones, add 0 (their exp(my_max - mx) may be NaN)
  double sum = my_sum == 0.0 ? 0.0 : my_sum * static_cast<double>(dexp(my_max - mx));
  sum = block_sum(sum);
  const double z = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) {
    ce[t] = static_cast<T>(z - static_cast<double>(target_logit));
    lse[t] = static_cast<T>(z);
  }
  // Each element written once, the target's with its -grad_scale (one rounding in bf16). Every thread
  // read x[y] before block_max's barriers, so writing over an aliased x[y] is safe.
  const T coef = static_cast<T>(grad_scale * (1.0 + 2.0 * z_weight * z) / sum);
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x)
    d[v] = dexp(x[v] - mx) * coef - (v == y ? static_cast<T>(grad_scale) : T(0));
}

}  // namespace

template <class T, class D>
void softmax_xent_forward_backward(const KernelContext& ctx, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, D* dlogits) {
  if (tokens <= 0) return;
  xent<<<static_cast<unsigned>(tokens), 512, 0, stream_of(ctx)>>>(logits, targets, vocab, z_weight, grad_scale, ce, lse,
                                                                  dlogits);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T, D)                                                                                      \
  template void softmax_xent_forward_backward<T, D>(const KernelContext&, const T*, const int32_t*, int64_t, int64_t, \
                                                    double, double, T*, T*, D*);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(float, bf16)

}  // namespace glam::kernels::cuda
