// GShard top-k router on the GPU, with the CPU's exact rules (kernels/router.h):
//   1. one thread per token: softmax, top-k (lowest index on ties), normalised gates, the random
//      routing draw (the same splitmix64 counter), loc = 0 (candidate) or -2 (skipped);
//   2. one block per routing group: capacity positions as running counts per expert over the
//      group's copies in the CPU's order (first choices in token order, then second choices), staged
//      through shared memory; each expert's count is owned by one thread, so no atomics;
// aux loss and the backward pass per group / per token as on the CPU (float64 sums).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

__device__ double uniform_draw(uint64_t seed, int64_t token) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(token) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

template <class T>
__global__ void route_tokens(const T* logits, int64_t n, int64_t e_count, int64_t k, bool random, double threshold,
                             uint64_t seed, int64_t first_token, T* probs, int32_t* expert, T* gate, int32_t* loc) {
  GLAM_GRID_STRIDE(t, n) {
    const T* x = logits + t * e_count;
    T* p = probs + t * e_count;  // may alias x
    T mx = x[0];
    for (int64_t e = 1; e < e_count; ++e) mx = x[e] > mx ? x[e] : mx;
    double sum = 0;  // in float64 as on the CPU: hundreds of experts
    for (int64_t e = 0; e < e_count; ++e) sum += (p[e] = dexp(x[e] - mx));
    for (int64_t e = 0; e < e_count; ++e) p[e] = static_cast<T>(p[e] / sum);
    int64_t i1 = 0;
    for (int64_t e = 1; e < e_count; ++e)
      if (p[e] > p[i1]) i1 = e;
    expert[t * k] = static_cast<int32_t>(i1);
    loc[t * k] = 0;
    if (k == 1) {
      gate[t] = p[i1];
      continue;
    }
    int64_t i2 = i1 == 0 ? 1 : 0;
    for (int64_t e = 0; e < e_count; ++e)
      if (e != i1 && p[e] > p[i2]) i2 = e;
    expert[t * k + 1] = static_cast<int32_t>(i2);
    T denom = p[i1] + p[i2] + static_cast<T>(kGateNormEps);
    gate[t * k] = p[i1] / denom;
    T g2 = p[i2] / denom;
    bool keep = true;
    if (random) {
      double u = uniform_draw(seed, first_token + t);
      double lim = static_cast<double>(g2) / threshold;
      keep = u < (lim < 1.0 ? lim : 1.0);
    }
    gate[t * k + 1] = keep ? g2 : T(0);
    loc[t * k + 1] = keep ? 0 : -2;
  }
}

constexpr int kStage = 1024;  // copies staged in shared memory at a time

template <class T>
__global__ void assign_slots(const int32_t* expert, int64_t group_tokens, int64_t e_count, int64_t k, int64_t groups,
                             int64_t cap, T* gate, int32_t* loc, int32_t* slot_token) {
  extern __shared__ int32_t count[];  // e_count running counts
  __shared__ int32_t stage[kStage];
  const int64_t g = blockIdx.x;
  for (int64_t e = threadIdx.x; e < e_count; e += blockDim.x) count[e] = 0;
  for (int64_t c = 0; c < k; ++c)
    for (int64_t base = 0; base < group_tokens; base += kStage) {
      const int64_t len = group_tokens - base < kStage ? group_tokens - base : kStage;
      __syncthreads();
      for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        int64_t idx = (g * group_tokens + base + j) * k + c;
        stage[j] = loc[idx] == -2 ? -1 : expert[idx];  // skipped copies take no position
      }
      __syncthreads();
      for (int64_t e = threadIdx.x; e < e_count; e += blockDim.x) {
        int32_t cnt = count[e];
        for (int64_t j = 0; j < len; ++j) {
          if (stage[j] != e) continue;
          const int64_t t = g * group_tokens + base + j, idx = t * k + c;
          const int64_t pos = cnt++;
          if (pos < cap) {
            const int64_t slot = (e * groups + g) * cap + pos;
            loc[idx] = static_cast<int32_t>(slot);
            slot_token[slot] = static_cast<int32_t>(t);
          } else {
            loc[idx] = -1;
            gate[idx] = T(0);
          }
        }
        count[e] = cnt;
      }
    }
}

// f[g, e] = fraction of group g's tokens whose first choice is e; pm[g, e] = mean prob (optional).
template <class T>
__global__ void group_fractions(const T* probs, const int32_t* expert, int64_t group_tokens, int64_t e_count, int64_t k,
                                double* f, T* aux) {
  const int64_t g = blockIdx.x;
  const double inv = 1.0 / static_cast<double>(group_tokens);
  double part = 0;
  for (int64_t e = threadIdx.x; e < e_count; e += blockDim.x) {
    double fe = 0, pe = 0;
    for (int64_t t = g * group_tokens; t < (g + 1) * group_tokens; ++t) {
      fe += expert[t * k] == e ? 1.0 : 0.0;
      if (aux) pe += static_cast<double>(probs[t * e_count + e]);
    }
    if (f) f[g * e_count + e] = fe * inv;
    part += fe * inv * pe * inv;
  }
  if (aux) {
    part = block_sum(part);
    if (threadIdx.x == 0) aux[g] = static_cast<T>(static_cast<double>(e_count) * part);
  }
}

template <class T>
__global__ void router_bwd(const T* probs, const int32_t* expert, const int32_t* loc, const T* dgate, double aux_scale,
                           const double* f, int64_t n, int64_t e_count, int64_t k, int64_t group_tokens, T* dlogits) {
  const double inv_s = 1.0 / static_cast<double>(group_tokens);
  GLAM_GRID_STRIDE(t, n) {
    const T* p = probs + t * e_count;
    T* d = dlogits + t * e_count;
    const double* fg = f + (t / group_tokens) * e_count;
    for (int64_t e = 0; e < e_count; ++e) d[e] = static_cast<T>(aux_scale * static_cast<double>(e_count) * fg[e] * inv_s);
    const int64_t i1 = expert[t * k];
    if (k == 1) {
      if (loc[t] >= 0) d[i1] += dgate[t];
    } else {
      const int64_t i2 = expert[t * k + 1];
      const double g1 = p[i1], g2 = p[i2];
      const double den = g1 + g2 + kGateNormEps;
      const double d1 = loc[t * k] >= 0 ? static_cast<double>(dgate[t * k]) : 0.0;
      const double d2 = loc[t * k + 1] >= 0 ? static_cast<double>(dgate[t * k + 1]) : 0.0;
      const double den2 = den * den;
      d[i1] += static_cast<T>((d1 * (g2 + kGateNormEps) - d2 * g2) / den2);
      d[i2] += static_cast<T>((d2 * (g1 + kGateNormEps) - d1 * g1) / den2);
    }
    T dot = 0;
    for (int64_t e = 0; e < e_count; ++e) dot += p[e] * d[e];
    for (int64_t e = 0; e < e_count; ++e) d[e] = p[e] * (d[e] - dot);
  }
}

// A histogram of the copies' bins per block in shared memory, then one global add per bin and block.
__global__ void count_routes(const int32_t* expert, const int32_t* loc, int64_t copies, int64_t per_expert,
                             int64_t e_count, int64_t n_bins, int32_t* counts) {
  extern __shared__ int32_t bins[];  // n_bins: router_count_bins(e_count)
  for (int64_t b = threadIdx.x; b < n_bins; b += blockDim.x) bins[b] = 0;
  __syncthreads();
  GLAM_GRID_STRIDE(c, copies) {
    const int32_t v = loc[c];
    atomicAdd(&bins[v >= 0 ? v / per_expert : v == -1 ? e_count + expert[c] : 2 * e_count], 1);
  }
  __syncthreads();
  for (int64_t b = threadIdx.x; b < n_bins; b += blockDim.x)
    if (bins[b] != 0) atomicAdd(&counts[b], bins[b]);
}

int threads_for_experts(int64_t e_count) {
  int64_t t = (e_count + 31) / 32 * 32;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(t, 32), 256));
}

}  // namespace

template <class T>
void router_forward(const KernelContext& ctx, const T* logits, const RouterShape& s, const SecondExpertPolicy& policy,
                    T* probs, int32_t* expert, T* gate, int32_t* loc, int32_t* slot_token) {
  if (s.tokens <= 0) return;
  cudaStream_t st = stream_of(ctx);
  GLAM_CUDA_CHECK(cudaMemsetAsync(slot_token, 0xff, sizeof(int32_t) * static_cast<size_t>(s.slots()), st));  // -1
  route_tokens<<<grid_for(s.tokens, 128), 128, 0, st>>>(logits, s.tokens, s.experts, s.top_k, policy.random,
                                                         policy.threshold, policy.seed, policy.first_token, probs,
                                                         expert, gate, loc);
  GLAM_CUDA_LAUNCHED();
  assign_slots<<<static_cast<unsigned>(s.groups()), threads_for_experts(s.experts),
                 sizeof(int32_t) * static_cast<size_t>(s.experts), st>>>(expert, s.group_tokens, s.experts, s.top_k,
                                                                         s.groups(), s.capacity, gate, loc, slot_token);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void router_aux_loss(const KernelContext& ctx, const T* probs, const int32_t* expert, const RouterShape& s, T* aux) {
  if (s.tokens <= 0) return;
  group_fractions<<<static_cast<unsigned>(s.groups()), threads_for_experts(s.experts), 0, stream_of(ctx)>>>(
      probs, expert, s.group_tokens, s.experts, s.top_k, nullptr, aux);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void router_backward(const KernelContext& ctx, const T* probs, const int32_t* expert, const int32_t* loc, const T* dgate,
                     double aux_scale, const RouterShape& s, T* dlogits) {
  if (s.tokens <= 0) return;
  cudaStream_t st = stream_of(ctx);
  double* f = static_cast<double*>(scratch(st, sizeof(double) * static_cast<size_t>(s.groups() * s.experts)));
  group_fractions<T><<<static_cast<unsigned>(s.groups()), threads_for_experts(s.experts), 0, st>>>(
      probs, expert, s.group_tokens, s.experts, s.top_k, f, nullptr);
  GLAM_CUDA_LAUNCHED();
  router_bwd<<<grid_for(s.tokens, 128), 128, 0, st>>>(probs, expert, loc, dgate, aux_scale, f, s.tokens, s.experts,
                                                       s.top_k, s.group_tokens, dlogits);
  GLAM_CUDA_LAUNCHED();
}

void router_counts(const KernelContext& ctx, const int32_t* expert, const int32_t* loc, const RouterShape& s,
                   int32_t* counts) {
  cudaStream_t st = stream_of(ctx);
  const size_t bin_bytes = sizeof(int32_t) * static_cast<size_t>(router_count_bins(s.experts));
  GLAM_CUDA_CHECK(cudaMemsetAsync(counts, 0, bin_bytes, st));
  const int64_t copies = s.tokens * s.top_k;
  if (copies <= 0) return;
  // Few blocks: each adds every bin to global memory once.
  const unsigned blocks = std::min<unsigned>(grid_for(copies, 256), 64);
  // One block's bins in shared memory: 48 KiB hold 6,143 experts' (the launch's default limit).
  if (bin_bytes > 48 * 1024)
    throw std::invalid_argument("router_counts: " + std::to_string(s.experts) + " experts need " +
                                std::to_string(bin_bytes) + " bytes of bins, more than a block's 48 KiB");
  count_routes<<<blocks, 256, bin_bytes, st>>>(expert, loc, copies, s.groups() * s.capacity, s.experts,
                                               router_count_bins(s.experts), counts);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T)                                                                                          \
  template void router_forward<T>(const KernelContext&, const T*, const RouterShape&, const SecondExpertPolicy&, T*, \
                                  int32_t*, T*, int32_t*, int32_t*);                                                 \
  template void router_aux_loss<T>(const KernelContext&, const T*, const int32_t*, const RouterShape&, T*);          \
  template void router_backward<T>(const KernelContext&, const T*, const int32_t*, const int32_t*, const T*, double, \
                                   const RouterShape&, T*);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels::cuda
