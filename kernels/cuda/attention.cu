// The non-product parts of attention: the causal softmax forward (with the relative position bias
// added as the scores are read) and backward, one warp per row, and the bias gradient summed per
// bucket in shared memory.
#include "attention.h"
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

constexpr int kSharedBuckets = 256;  // buckets summed in shared memory; larger indices go to global atomics

// One block per (query row i, head h): sums over the batch and the row's keys. The bucket depends on
// the key, not the sequence, so each thread first sums its key over the batch (independent loads,
// several in flight). The bucket falls as the key nears the query, and every key further than
// max_distance shares the last one, so whole warps often hold a single bucket: they add one warp sum
// instead of 32 atomics on one address.
template <class T, class G>
__global__ void bias_bwd(const T* dscores, const int32_t* bucket, G* dbias, int64_t batch, int64_t heads, int64_t t) {
  __shared__ G acc[kSharedBuckets];
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x & 31;
  for (int j = threadIdx.x; j < kSharedBuckets; j += blockDim.x) acc[j] = G(0);
  __syncthreads();
  auto add = [&](int32_t k, G v) {
    if (k < kSharedBuckets) atomicAdd(&acc[k], v);
    else atomicAdd(dbias + static_cast<int64_t>(k) * heads + h, v);
  };
  const T* row = dscores + (h * t + i) * t;  // sequence b's row is b x heads x t x t further
  const int64_t sequence_stride = heads * t * t;
  // Every lane takes every turn (the trip count is the block's), so the warp votes are full.
  for (int64_t j0 = 0; j0 <= i; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const bool key = j <= i;
    const int32_t k = key ? bucket[i - j] : -1;
    G v = G(0);
    if (key) {
#pragma unroll 4
      for (int64_t b = 0; b < batch; ++b) v += static_cast<G>(row[b * sequence_stride + j]);
    }
    const int32_t k0 = __shfl_sync(0xffffffffu, k, 0);
    if (__all_sync(0xffffffffu, k == k0)) {
      const G w = warp_sum(v);
      if (lane == 0 && k0 >= 0) add(k0, w);  // k0 < 0: the whole warp is past the query
    } else if (key) {
      add(k, v);
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < kSharedBuckets; j += blockDim.x)
    if (acc[j] != G(0)) atomicAdd(dbias + static_cast<int64_t>(j) * heads + h, acc[j]);
}

template <class T>
__global__ void softmax_fwd(T* scores, int64_t rows, int64_t t, RelativeBias<T> bias) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t i = r % t, h = (r / t) % bias.heads;
  using V = acc_t<T>;  // computed in float32 for bf16 scores
  T* s = scores + r * t;
  // The biased score of key j, in the compute type: a bf16 score is not rounded again after the bias.
  auto score = [&](int64_t j) { return static_cast<V>(s[j]) + bias.at(i, j, h); };
  V mx = score(0);
  for (int64_t j = lane; j <= i; j += 32) {
    const V v = score(j);
    mx = v > mx ? v : mx;
  }
  mx = warp_max(mx);
  // The exponentials are recomputed rather than stored between the passes, so that a bf16 row is
  // rounded once, as a probability.
  double sum = 0;  // float64, as on the CPU: a float32 sum over a long row errs by about 1e-6
  for (int64_t j = lane; j <= i; j += 32) sum += dexp(score(j) - mx);
  sum = warp_sum(sum);
  const V inv = static_cast<V>(1.0 / sum);
  for (int64_t j = lane; j < t; j += 32) s[j] = j <= i ? dexp(score(j) - mx) * inv : V(0);
}

template <class T>
__global__ void softmax_bwd(const T* probs, T* dprobs, int64_t rows, int64_t t) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t i = r % t;
  const T* p = probs + r * t;
  T* d = dprobs + r * t;
  using V = acc_t<T>;
  V dot = 0;
  for (int64_t j = lane; j <= i; j += 32) dot += static_cast<V>(p[j]) * static_cast<V>(d[j]);
  dot = warp_sum(dot);
  for (int64_t j = lane; j < t; j += 32) d[j] = j <= i ? static_cast<V>(p[j]) * (static_cast<V>(d[j]) - dot) : V(0);
}

}  // namespace

template <class T, class G>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias,
                             int64_t batch, int64_t heads, int64_t seq_len) {
  if (batch * heads * seq_len <= 0) return;
  dim3 grid(static_cast<unsigned>(seq_len), static_cast<unsigned>(heads));
  bias_bwd<<<grid, 128, 0, stream_of(ctx)>>>(dscores, bucket, dbias, batch, heads, seq_len);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len, RelativeBias<T> bias) {
  if (rows <= 0) return;
  softmax_fwd<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream_of(ctx)>>>(scores, rows, seq_len, bias);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len) {
  if (rows <= 0) return;
  softmax_bwd<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream_of(ctx)>>>(probs, dprobs, rows, seq_len);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T, G)                                                                                      \
  template void attention_bias_backward<T, G>(const KernelContext&, const T*, const int32_t*, G*, int64_t, int64_t, \
                                              int64_t);                                                             \
  template void causal_softmax_forward<T>(const KernelContext&, T*, int64_t, int64_t, RelativeBias<T>);             \
  template void causal_softmax_backward<T>(const KernelContext&, const T*, T*, int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
