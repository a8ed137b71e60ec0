// Softmax cross-entropy with z-loss, fused with its gradient: one block per token row. A row of a 256K
// vocabulary (1 MB of float32) does not stay in cache between passes, so the maximum and the sum of
// exponentials come from one online pass (each thread's running sum is rescaled when its maximum
// grows), and the gradient from a second: two reads of the logits instead of three.
// The vocabulary-parallel version takes three passes, since the slices' maxima must be combined
// before their sums can be: the row maxima, the sums, then the losses and gradients.
#include <vector>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

// One row's losses and gradient (the block's threads together) from its largest logit `mx`, its sum
// of exp(x - mx) and its target's logit; `y` is the target's index in the row, or -1 when another
// vocabulary slice holds it. Each gradient element is written once, the target's with its
// -grad_scale (one rounding in bf16); d may alias x, since each element is read before it is written,
// by the same thread.
template <class T, class D>
__device__ void finish_row(const T* x, D* d, int64_t vocab, T mx, double sum, double target_logit, int64_t y,
                           double z_weight, double grad_scale, T* ce, T* lse) {
  const double z = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) {
    *ce = static_cast<T>(z - target_logit);
    *lse = static_cast<T>(z);
  }
  const T coef = static_cast<T>(grad_scale * (1.0 + 2.0 * z_weight * z) / sum);
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x)
    d[v] = dexp(x[v] - mx) * coef - (v == y ? static_cast<T>(grad_scale) : T(0));
}

template <class T, class D>
__global__ void xent(const T* logits, const int32_t* targets, int64_t vocab, double z_weight, double grad_scale, T* ce,
                     T* lse, D* dlogits) {
  const int64_t t = blockIdx.x;
  const T* x = logits + t * vocab;
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
  // Every thread read x[y] before block_max's barriers, so writing over an aliased x[y] is safe.
  finish_row(x, dlogits + t * vocab, vocab, mx, sum, static_cast<double>(target_logit), y, z_weight, grad_scale,
             ce + t, lse + t);
}

// The slice's largest logit of each row.
template <class T>
__global__ void slice_row_max(const T* logits, int64_t vocab, double* mx) {
  const T* x = logits + blockIdx.x * vocab;
  T m = -INFINITY;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) m = x[v] > m ? x[v] : m;
  m = block_max(m);
  if (threadIdx.x == 0) mx[blockIdx.x] = static_cast<double>(m);
}

// Per row, from the whole vocabulary's maxima: the slice's sum of exp(x - max) (sums[t]) and the
// target's logit where the slice holds it (sums[tokens + t], 0 elsewhere).
template <class T>
__global__ void slice_row_sums(const T* logits, const int32_t* targets, int64_t tokens, int64_t vocab, int64_t first_id,
                               const double* mx, double* sums) {
  const int64_t t = blockIdx.x;
  const T* x = logits + t * vocab;
  const T m = static_cast<T>(mx[t]);
  double acc = 0;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) acc += static_cast<double>(dexp(x[v] - m));
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    const int64_t y = static_cast<int64_t>(targets[t]) - first_id;
    sums[t] = acc;
    sums[tokens + t] = y >= 0 && y < vocab ? static_cast<double>(x[y]) : 0.0;
  }
}

template <class T, class D>
__global__ void slice_finish(const T* logits, const int32_t* targets, int64_t tokens, int64_t vocab, int64_t first_id,
                             const double* mx, const double* sums, double z_weight, double grad_scale, T* ce, T* lse,
                             D* dlogits) {
  const int64_t t = blockIdx.x;
  const int64_t y = static_cast<int64_t>(targets[t]) - first_id;
  finish_row(logits + t * vocab, dlogits + t * vocab, vocab, static_cast<T>(mx[t]), sums[t], sums[tokens + t],
             y >= 0 && y < vocab ? y : -1, z_weight, grad_scale, ce + t, lse + t);
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

template <class T, class D>
void softmax_xent_forward_backward_sliced(const KernelContext& ctx, const T* logits, const int32_t* targets,
                                          int64_t tokens, int64_t vocab, int64_t first_id, double z_weight,
                                          double grad_scale, T* ce, T* lse, D* dlogits, const ShardReduce& reduce) {
  if (tokens <= 0) {  // the slices' collectives all the same, as on the CPU
    double none = 0;
    reduce.max(&none, 0);
    reduce.sum(&none, 0);
    return;
  }
  cudaStream_t s = stream_of(ctx);
  const unsigned rows = static_cast<unsigned>(tokens);
  StreamBuffer buffer(s, sizeof(double) * 3 * static_cast<size_t>(tokens));
  double* mx = buffer.doubles();
  double* sums = mx + tokens;
  std::vector<double> host(3 * static_cast<size_t>(tokens));
  slice_row_max<<<rows, 512, 0, s>>>(logits, vocab, mx);
  GLAM_CUDA_LAUNCHED();
  to_host(host.data(), mx, tokens, s);
  reduce.max(host.data(), tokens);
  to_device(mx, host.data(), tokens, s);
  slice_row_sums<<<rows, 512, 0, s>>>(logits, targets, tokens, vocab, first_id, mx, sums);
  GLAM_CUDA_LAUNCHED();
  to_host(host.data() + tokens, sums, 2 * tokens, s);
  reduce.sum(host.data() + tokens, 2 * tokens);
  to_device(sums, host.data() + tokens, 2 * tokens, s);
  slice_finish<<<rows, 512, 0, s>>>(logits, targets, tokens, vocab, first_id, mx, sums, z_weight, grad_scale, ce, lse,
                                    dlogits);
  GLAM_CUDA_LAUNCHED();
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

}  // namespace glam::kernels::cuda
