// The non-product parts of attention: the causal softmax forward (with the relative position bias
// added as the scores are read) and backward (with the bias gradient summed as the scores' gradient is
// written), one warp per row, and the bias gradient alone, summed per bucket in shared memory. Rows of up to 1,024 scores in 16-byte packs are held in registers, so that
// each is read once and written once (the other rows take three passes over the row).
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "attention.h"
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

constexpr int kSharedBuckets = 256;  // buckets summed in shared memory; larger indices go to global atomics

// A block's sums of head h's bias gradient per bucket: the first kSharedBuckets in shared memory (zeroed
// before the block's barrier, added to dbias after its last one), the others straight into dbias.
template <class G>
struct BlockBucketSums {
  G* shared;  // kSharedBuckets
  G* dbias;   // [buckets, heads]
  int64_t heads, h;
  __device__ void zero() const {
    for (int j = threadIdx.x; j < kSharedBuckets; j += blockDim.x) shared[j] = G(0);
  }
  __device__ void add(int32_t k, G v) const {
    if (k < kSharedBuckets) atomicAdd(&shared[k], v);
    else atomicAdd(dbias + static_cast<int64_t>(k) * heads + h, v);
  }
  __device__ void flush() const {
    for (int j = threadIdx.x; j < kSharedBuckets; j += blockDim.x)
      if (shared[j] != G(0)) atomicAdd(dbias + static_cast<int64_t>(j) * heads + h, shared[j]);
  }
};

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
  const BlockBucketSums<G> sums{acc, dbias, heads, h};
  sums.zero();
  __syncthreads();
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
      if (lane == 0 && k0 >= 0) sums.add(k0, w);  // k0 < 0: the whole warp is past the query
    } else if (key) {
      sums.add(k, v);
    }
  }
  __syncthreads();
  sums.flush();
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

// Calls f(q, e, j) for each key j <= i of row i that `lane` holds: element e of its pack q (lane k of
// the warp holds packs k, k + 32, ..., kPacks of them, of P values each).
template <int kPacks, int P, class F>
__device__ __forceinline__ void for_held_keys(int lane, int64_t i, F&& f) {
  const int64_t key_packs = i / P + 1;
#pragma unroll
  for (int q = 0; q < kPacks; ++q) {
    const int64_t k = lane + 32 * q;
    if (k >= key_packs) continue;
#pragma unroll
    for (int e = 0; e < P; ++e)
      if (k * P + e <= i) f(q, e, k * P + e);
  }
}

// Writes row i held in registers (lane k of the warp holds packs k, k + 32, ...): value(q, e) for key
// j = (k + 32 q) P + e <= i, and 0 for every masked j (written as 0, not computed: a row whose sum is
// not finite leaves its masked entries 0, as the CPU does).
template <class T, int kPacks, class Value>
__device__ __forceinline__ void store_held_row(T* row, int lane, int64_t i, int64_t row_packs, Value value) {
  constexpr int P = Pack<T>::kSize;
#pragma unroll
  for (int q = 0; q < kPacks; ++q) {
    const int64_t k = lane + 32 * q;
    if (k >= row_packs) continue;
    Pack<T> out;
#pragma unroll
    for (int e = 0; e < P; ++e) out.v[e] = k * P + e <= i ? value(q, e) : acc_t<T>(0);
    store_pack(row, k, out);
  }
}

// The row held in registers: lane k of the warp holds packs k, k + 32, ... (kPacks of them, 32 / P
// per lane at most), coalesced 16-byte loads and stores; only the packs that hold keys j <= i are
// read. The same arithmetic per element as softmax_fwd, each exponential taken once.
template <class T, int kPacks>
__global__ void softmax_fwd_held(T* scores, int64_t rows, int64_t t, RelativeBias<T> bias) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t i = r % t, h = (r / t) % bias.heads;
  using V = acc_t<T>;
  constexpr int P = Pack<T>::kSize;
  T* s = scores + r * t;
  const int64_t row_packs = t / P, key_packs = i / P + 1;
  V v[kPacks][P];
  V mx = -INFINITY;
#pragma unroll
  for (int q = 0; q < kPacks; ++q) {
    const int64_t k = lane + 32 * q;
    if (k >= key_packs) continue;
    const Pack<T> a = load_pack(s, k);
#pragma unroll
    for (int e = 0; e < P; ++e) {
      const int64_t j = k * P + e;
      v[q][e] = V(0);
      if (j > i) continue;
      v[q][e] = static_cast<V>(a.v[e]) + bias.at(i, j, h);
      mx = v[q][e] > mx ? v[q][e] : mx;
    }
  }
  mx = warp_max(mx);
  double sum = 0;  // float64, as on the CPU; masked keys stay 0
  for_held_keys<kPacks, P>(lane, i, [&](int q, int e, int64_t) {
    v[q][e] = dexp(v[q][e] - mx);
    sum += v[q][e];
  });
  sum = warp_sum(sum);
  const V inv = static_cast<V>(1.0 / sum);
  store_held_row<T, kPacks>(s, lane, i, row_packs, [&](int q, int e) { return v[q][e] * inv; });
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

// softmax_bwd with the row held in registers (as softmax_fwd_held): probabilities and gradients read
// once, the gradient written once. With kBiasGrad it also sums the bias gradient of the written
// (rounded) values: a block's rows are one head's (the host checks that T is a multiple of the block's
// rows), so the block sums per bucket in shared memory and adds each bucket to dbias once. The keys
// past the largest exact distance share the row's farthest bucket, most of a long row: a lane adds
// those in a register and the warp adds them once; the others, a few near the diagonal, go to shared
// memory as runs of one bucket.
template <class T, int kPacks, bool kBiasGrad>
__global__ void softmax_bwd_held(const T* probs, T* dprobs, int64_t rows, int64_t t,
                                 RelativeBiasGrad<acc_t<T>> bias_grad) {
  using V = acc_t<T>;
  __shared__ V bucket_sums[kBiasGrad ? kSharedBuckets : 1];
  const int64_t h = (blockIdx.x * int64_t{blockDim.x / 32} / t) % bias_grad.heads;  // the block's head
  const BlockBucketSums<V> sums{bucket_sums, bias_grad.dbias, bias_grad.heads, h};
  if constexpr (kBiasGrad) {
    sums.zero();
    __syncthreads();
  }
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r < rows) {  // no early return: the block meets at the barrier below
    const int64_t i = r % t;
    constexpr int P = Pack<T>::kSize;
    const T* p = probs + r * t;
    T* d = dprobs + r * t;
    const int64_t row_packs = t / P, key_packs = i / P + 1;
    V pv[kPacks][P], dv[kPacks][P];
    V dot = 0;
#pragma unroll
    for (int q = 0; q < kPacks; ++q) {
      const int64_t k = lane + 32 * q;
      if (k >= key_packs) continue;
      const Pack<T> a = load_pack(p, k), g = load_pack(d, k);
#pragma unroll
      for (int e = 0; e < P; ++e) {
        const bool key = k * P + e <= i;
        pv[q][e] = key ? static_cast<V>(a.v[e]) : V(0);
        dv[q][e] = key ? static_cast<V>(g.v[e]) : V(0);
        dot += pv[q][e] * dv[q][e];
      }
    }
    dot = warp_sum(dot);
    // the gradient, in place (masked keys are not stored)
    for_held_keys<kPacks, P>(lane, i, [&](int q, int e, int64_t) { dv[q][e] = pv[q][e] * (dv[q][e] - dot); });
    store_held_row<T, kPacks>(d, lane, i, row_packs, [&](int q, int e) { return dv[q][e]; });
    if constexpr (kBiasGrad) {
      const int32_t far = bias_grad.bucket[t - 1];
      V far_sum = 0, run_sum = 0;
      int32_t run = -1;
      for_held_keys<kPacks, P>(lane, i, [&](int q, int e, int64_t j) {
        const V g = static_cast<V>(static_cast<T>(dv[q][e]));  // as stored
        const int32_t b = bias_grad.bucket[i - j];
        if (b == far) {
          far_sum += g;
          return;
        }
        if (b != run) {
          if (run >= 0) sums.add(run, run_sum);
          run = b, run_sum = V(0);
        }
        run_sum += g;
      });
      if (run >= 0) sums.add(run, run_sum);
      far_sum = warp_sum(far_sum);
      if (lane == 0) sums.add(far, far_sum);
    }
  }
  if constexpr (kBiasGrad) {
    __syncthreads();
    sums.flush();
  }
}

// The packs per lane a held row needs (a power of two, at least 1), or 0 when the row cannot be held:
// a length that is no multiple of a pack, an unaligned array, or more than 32 values per lane.
template <class T>
int held_packs(int64_t t, std::initializer_list<const T*> arrays) {
  constexpr int P = Pack<T>::kSize;
  if (!packs_fit<T>(t, arrays)) return 0;
  const int64_t per_lane = (t / P + 31) / 32;
  int packs = 1;
  while (packs < per_lane) packs *= 2;
  return packs * P <= 32 ? packs : 0;
}

// Calls launch(std::integral_constant<int, K>) with K = `packs`, the held row's packs per lane.
template <class T, class Launch>
void with_held_packs(int packs, Launch&& launch) {
  constexpr int P = Pack<T>::kSize;
  switch (packs) {
    case 1: return launch(std::integral_constant<int, 1>{});
    case 2: return launch(std::integral_constant<int, 2>{});
    case 4: if constexpr (4 * P <= 32) return launch(std::integral_constant<int, 4>{}); break;
    case 8: if constexpr (8 * P <= 32) return launch(std::integral_constant<int, 8>{}); break;
    case 16: if constexpr (16 * P <= 32) return launch(std::integral_constant<int, 16>{}); break;
    default: break;
  }
  // held_packs never asks for more; a launch left out would leave the scores unnormalised.
  throw std::logic_error("with_held_packs: no kernel for " + std::to_string(packs) + " packs per lane");
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
  const unsigned blocks = static_cast<unsigned>((rows + 7) / 8);
  if (const int packs = held_packs<T>(seq_len, {scores}); packs > 0)
    with_held_packs<T>(packs, [&](auto k) {
      softmax_fwd_held<T, decltype(k)::value><<<blocks, 256, 0, stream_of(ctx)>>>(scores, rows, seq_len, bias);
    });
  else
    softmax_fwd<<<blocks, 256, 0, stream_of(ctx)>>>(scores, rows, seq_len, bias);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len,
                             RelativeBiasGrad<acc_t<T>> bias_grad) {
  if (rows <= 0) return;
  constexpr int kRowsPerBlock = 8;  // warps of the 256-thread blocks
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const bool bias = bias_grad.dbias != nullptr;
  const int packs = held_packs<T>(seq_len, {probs, dprobs});
  // The bias gradient is summed in the held rows when a block's rows are one head's; otherwise the
  // separate kernel sums it after the rows are written.
  const bool fused = bias && packs > 0 && seq_len % kRowsPerBlock == 0;
  if (packs > 0) {
    with_held_packs<T>(packs, [&](auto k) {
      if (fused)
        softmax_bwd_held<T, decltype(k)::value, true>
            <<<blocks, 32 * kRowsPerBlock, 0, stream_of(ctx)>>>(probs, dprobs, rows, seq_len, bias_grad);
      else
        softmax_bwd_held<T, decltype(k)::value, false>
            <<<blocks, 32 * kRowsPerBlock, 0, stream_of(ctx)>>>(probs, dprobs, rows, seq_len, bias_grad);
    });
  } else {
    softmax_bwd<<<blocks, 32 * kRowsPerBlock, 0, stream_of(ctx)>>>(probs, dprobs, rows, seq_len);
  }
  GLAM_CUDA_LAUNCHED();
  if (bias && !fused)
    cuda::attention_bias_backward<T, acc_t<T>>(ctx, dprobs, bias_grad.bucket, bias_grad.dbias,
                                               rows / (bias_grad.heads * seq_len), bias_grad.heads, seq_len);
}

#define GLAM_INSTANTIATE(T, G)                                                                                      \
  template void attention_bias_backward<T, G>(const KernelContext&, const T*, const int32_t*, G*, int64_t, int64_t, \
                                              int64_t);                                                             \
  template void causal_softmax_forward<T>(const KernelContext&, T*, int64_t, int64_t, RelativeBias<T>);             \
  template void causal_softmax_backward<T>(const KernelContext&, const T*, T*, int64_t, int64_t,                  \
                                           RelativeBiasGrad<acc_t<T>>);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
