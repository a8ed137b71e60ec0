// Softmax cross-entropy with z-loss, fused with its gradient: one block per token row. A row of a 256K
// vocabulary (1 MB of float32) does not stay in cache between passes, so the maximum and the sum of
// exponentials come from one online pass (each thread's running sum is rescaled when its maximum
// grows), and the gradient from a second: two reads of the logits instead of three.
// The vocabulary-parallel version takes three passes, since the slices' maxima must be combined
// before their sums can be: the row maxima, the sums, then the losses and gradients.
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

// Rows of float32 logits are read 4 at a time (16-byte loads) where the vocabulary is a multiple of
// 4 and the rows are aligned: a 4-byte load per thread keeps too few bytes in flight to reach the
// HBM's bandwidth on these long rows (it is the step's largest elementwise pass).
struct alignas(8) Bf16x4 {
  bf16 v[4];
};

template <class T, class D>
bool rows_by_four(const T* logits, const D* dlogits, int64_t vocab) {
  return std::is_same_v<T, float> && vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(dlogits) % (4 * sizeof(D)) == 0;
}

// d[v] for the four logits q at v0..v0+3 (see finish_row).
template <class D>
__device__ void store_four(D* d, int64_t v0, float4 q, float mx, float coef, int64_t y, float grad_scale) {
  float g[4] = {q.x, q.y, q.z, q.w};
  for (int i = 0; i < 4; ++i) g[i] = expf(g[i] - mx) * coef - (v0 + i == y ? grad_scale : 0.f);
  if constexpr (std::is_same_v<D, float>) {
    *reinterpret_cast<float4*>(d + v0) = make_float4(g[0], g[1], g[2], g[3]);
  } else {
    Bf16x4 b;
    for (int i = 0; i < 4; ++i) b.v[i] = bf16(g[i]);
    *reinterpret_cast<Bf16x4*>(d + v0) = b;
  }
}

// One row's losses and gradient (the block's threads together) from its largest logit `mx`, its sum
// of exp(x - mx) and its target's logit; `y` is the target's index in the row, or -1 when another
// vocabulary slice holds it. Each gradient element is written once, the target's with its
// -grad_scale (one rounding in bf16); d may alias x, since each element is read before it is written,
// by the same thread. kByFour: the row in 16-byte loads (rows_by_four).
template <bool kByFour, class T, class D>
__device__ void finish_row(const T* x, D* d, int64_t vocab, T mx, double sum, double target_logit, int64_t y,
                           double z_weight, double grad_scale, T* ce, T* lse) {
  const double z = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) {
    *ce = static_cast<T>(z - target_logit);
    *lse = static_cast<T>(z);
  }
  const T coef = static_cast<T>(grad_scale * (1.0 + 2.0 * z_weight * z) / sum);
  if constexpr (kByFour && std::is_same_v<T, float>) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t v = threadIdx.x; v < vocab / 4; v += blockDim.x)
      store_four(d, 4 * v, x4[v], mx, coef, y, static_cast<float>(grad_scale));
  } else {
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x)
      d[v] = dexp(x[v] - mx) * coef - (v == y ? static_cast<T>(grad_scale) : T(0));
  }
}

// Adds logit xv to a thread's running maximum and sum of exp(x - maximum): the sum is rescaled when
// the maximum grows; a masked (-inf) logit adds nothing; a NaN propagates.
template <class T>
__device__ void add_logit(T xv, T& my_max, double& my_sum) {
  if (xv > my_max) {
    my_sum = my_sum * static_cast<double>(dexp(my_max - xv)) + 1.0;
    my_max = xv;
  } else if (xv != -INFINITY) {
    my_sum += static_cast<double>(dexp(xv - my_max));
  }
}

template <bool kByFour, class T, class D>
__global__ void xent(const T* logits, const int32_t* targets, int64_t vocab, double z_weight, double grad_scale, T* ce,
                     T* lse, D* dlogits) {
  const int64_t t = blockIdx.x;
  const T* x = logits + t * vocab;
  const int32_t y = targets[t];
  const T target_logit = x[y];
  T my_max = -INFINITY;
  double my_sum = 0;  // sum of exp(x - my_max) over this thread's elements
  if constexpr (kByFour && std::is_same_v<T, float>) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 2
    for (int64_t v = threadIdx.x; v < vocab / 4; v += blockDim.x) {
      const float4 q = x4[v];
      add_logit(q.x, my_max, my_sum), add_logit(q.y, my_max, my_sum);
      add_logit(q.z, my_max, my_sum), add_logit(q.w, my_max, my_sum);
    }
  } else {
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) add_logit(x[v], my_max, my_sum);
  }
  const T mx = block_max(my_max);
  // threads with no elements, or only -inf ones, add 0 (their exp(my_max - mx) may be NaN)
  double sum = my_sum == 0.0 ? 0.0 : my_sum * static_cast<double>(dexp(my_max - mx));
  sum = block_sum(sum);
  // Every thread read x[y] before block_max's barriers, so writing over an aliased x[y] is safe.
  finish_row<kByFour>(x, dlogits + t * vocab, vocab, mx, sum, static_cast<double>(target_logit), y, z_weight,
                      grad_scale, ce + t, lse + t);
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
  finish_row<false>(logits + t * vocab, dlogits + t * vocab, vocab, static_cast<T>(mx[t]), sums[t], sums[tokens + t],
             y >= 0 && y < vocab ? y : -1, z_weight, grad_scale, ce + t, lse + t);
}

}  // namespace

template <class T, class D>
void softmax_xent_forward_backward(const KernelContext& ctx, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, D* dlogits) {
  if (tokens <= 0) return;
  const unsigned rows = static_cast<unsigned>(tokens);
  if constexpr (std::is_same_v<T, float>) {
    if (rows_by_four(logits, dlogits, vocab)) {
      xent<true><<<rows, 512, 0, stream_of(ctx)>>>(logits, targets, vocab, z_weight, grad_scale, ce, lse, dlogits);
      GLAM_CUDA_LAUNCHED();
      return;
    }
  }
  xent<false><<<rows, 512, 0, stream_of(ctx)>>>(logits, targets, vocab, z_weight, grad_scale, ce, lse, dlogits);
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
