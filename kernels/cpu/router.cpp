#include "router.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

double routing_uniform(uint64_t seed, int64_t token) {
  // splitmix64 of (seed, token): a counter-based draw, independent of how tokens are split.
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(token) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

template <class T>
void router_forward(const KernelContext& ctx, const T* logits, const RouterShape& s, const SecondExpertPolicy& policy,
                    T* probs, int32_t* expert, T* gate, int32_t* loc, int32_t* slot_token) {
  GLAM_CUDA_DISPATCH(ctx, router_forward<T>(ctx, logits, s, policy, probs, expert, gate, loc, slot_token));
  const int64_t n = s.tokens, e_count = s.experts, k = s.top_k, groups = s.groups(), cap = s.capacity;
  // softmax and top-k choice, per token
  GLAM_PARALLEL_FOR(n / 64)
  for (int64_t t = 0; t < n; ++t) {
    const T* x = logits + t * e_count;
    T* p = probs + t * e_count;
    T mx = x[0];
    for (int64_t e = 1; e < e_count; ++e) mx = std::max(mx, x[e]);
    double sum = 0;  // float64: a float32 sum over hundreds of experts errs by about 1e-6
    for (int64_t e = 0; e < e_count; ++e) sum += (p[e] = std::exp(x[e] - mx));
    for (int64_t e = 0; e < e_count; ++e) p[e] = static_cast<T>(p[e] / sum);
    int64_t i1 = 0;
    for (int64_t e = 1; e < e_count; ++e)
      if (p[e] > p[i1]) i1 = e;
    expert[t * k] = static_cast<int32_t>(i1);
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
    gate[t * k + 1] = p[i2] / denom;
  }
  // capacity, per group: first choices in token order, then second choices in token order
  std::fill(slot_token, slot_token + s.slots(), -1);
  std::vector<int64_t> count(static_cast<size_t>(e_count));
  for (int64_t g = 0; g < groups; ++g) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t t = g * s.group_tokens; t < (g + 1) * s.group_tokens; ++t) {
        int64_t idx = t * k + c;
        int64_t e = expert[idx];
        bool keep = true;
        if (c == 1 && policy.random) {
          // GShard: the second copy survives with probability min(1, g2 / threshold), before capacity.
          double u = routing_uniform(policy.seed, policy.first_token + t);
          keep = u < std::min(1.0, static_cast<double>(gate[idx]) / policy.threshold);
        }
        int64_t pos = keep ? count[e]++ : cap;
        if (pos < cap) {
          int64_t slot = (e * groups + g) * cap + pos;
          loc[idx] = static_cast<int32_t>(slot);
          slot_token[slot] = static_cast<int32_t>(t);
        } else {
          loc[idx] = keep ? -1 : -2;  // -1: over capacity, -2: not chosen by random routing
          gate[idx] = T(0);
        }
      }
  }
}

template <class T>
void router_aux_loss(const KernelContext& ctx, const T* probs, const int32_t* expert, const RouterShape& s, T* aux) {
  GLAM_CUDA_DISPATCH(ctx, router_aux_loss<T>(ctx, probs, expert, s, aux));
  const int64_t e_count = s.experts;
  std::vector<double> f(static_cast<size_t>(e_count)), pm(static_cast<size_t>(e_count));
  for (int64_t g = 0; g < s.groups(); ++g) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(pm.begin(), pm.end(), 0.0);
    for (int64_t t = g * s.group_tokens; t < (g + 1) * s.group_tokens; ++t) {
      f[static_cast<size_t>(expert[t * s.top_k])] += 1;
      for (int64_t e = 0; e < e_count; ++e) pm[static_cast<size_t>(e)] += probs[t * e_count + e];
    }
    double sum = 0;
    double inv = 1.0 / static_cast<double>(s.group_tokens);
    for (int64_t e = 0; e < e_count; ++e) sum += f[static_cast<size_t>(e)] * inv * pm[static_cast<size_t>(e)] * inv;
    aux[g] = static_cast<T>(static_cast<double>(e_count) * sum);
  }
}

template <class T>
void router_backward(const KernelContext& ctx, const T* probs, const int32_t* expert, const int32_t* loc, const T* dgate,
                     double aux_scale, const RouterShape& s, T* dlogits) {
  GLAM_CUDA_DISPATCH(ctx, router_backward<T>(ctx, probs, expert, loc, dgate, aux_scale, s, dlogits));
  const int64_t e_count = s.experts, k = s.top_k;
  const double inv_s = 1.0 / static_cast<double>(s.group_tokens);
  std::vector<double> f(static_cast<size_t>(e_count * s.groups()), 0.0);
  for (int64_t t = 0; t < s.tokens; ++t) f[static_cast<size_t>((t / s.group_tokens) * e_count + expert[t * k])] += inv_s;
  GLAM_PARALLEL_FOR(s.tokens / 64)
  for (int64_t t = 0; t < s.tokens; ++t) {
    const T* p = probs + t * e_count;
    T* d = dlogits + t * e_count;
    const double* fg = f.data() + (t / s.group_tokens) * e_count;
    // dL/dp: the auxiliary loss, E * sum_e f_e * mean_t p_te per group, times aux_scale
    for (int64_t e = 0; e < e_count; ++e)
      d[e] = static_cast<T>(aux_scale * static_cast<double>(e_count) * fg[e] * inv_s);
    int64_t i1 = expert[t * k];
    if (k == 1) {
      if (loc[t] >= 0) d[i1] += dgate[t];
    } else {
      int64_t i2 = expert[t * k + 1];
      // combine weight c_j = keep_j * p_j / (p1 + p2 + eps)
      double g1 = p[i1], g2 = p[i2];
      double den = g1 + g2 + kGateNormEps;
      double d1 = loc[t * k] >= 0 ? static_cast<double>(dgate[t * k]) : 0.0;
      double d2 = loc[t * k + 1] >= 0 ? static_cast<double>(dgate[t * k + 1]) : 0.0;
      double den2 = den * den;
      d[i1] += static_cast<T>((d1 * (g2 + kGateNormEps) - d2 * g2) / den2);
      d[i2] += static_cast<T>((d2 * (g1 + kGateNormEps) - d1 * g1) / den2);
    }
    // softmax backward
    T dot = 0;
    for (int64_t e = 0; e < e_count; ++e) dot += p[e] * d[e];
    for (int64_t e = 0; e < e_count; ++e) d[e] = p[e] * (d[e] - dot);
  }
}

void router_counts(const KernelContext& ctx, const int32_t* expert, const int32_t* loc, const RouterShape& s,
                   int32_t* counts) {
  GLAM_CUDA_DISPATCH(ctx, router_counts(ctx, expert, loc, s, counts));
  const int64_t per_expert = s.groups() * s.capacity, e_count = s.experts;
  std::fill(counts, counts + router_count_bins(e_count), 0);
  for (int64_t c = 0; c < s.tokens * s.top_k; ++c) {
    const int32_t v = loc[c];
    counts[v >= 0 ? v / per_expert : v == -1 ? e_count + expert[c] : 2 * e_count]++;
  }
}

#define GLAM_INSTANTIATE(T)                                                                                          \
  template void router_forward<T>(const KernelContext&, const T*, const RouterShape&, const SecondExpertPolicy&, T*, \
                                  int32_t*, T*, int32_t*, int32_t*);                                                 \
  template void router_aux_loss<T>(const KernelContext&, const T*, const int32_t*, const RouterShape&, T*);          \
  template void router_backward<T>(const KernelContext&, const T*, const int32_t*, const int32_t*, const T*, double, \
                                   const RouterShape&, T*);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels
