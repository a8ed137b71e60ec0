#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/fast_math.h"

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

int32_t relative_position_bucket(int64_t relative_position, int64_t buckets, int64_t max_distance) {
  // Unidirectional: only keys at or before the query (relative_position <= 0) matter.
  int64_t n = std::max<int64_t>(-relative_position, 0);
  int64_t max_exact = buckets / 2;
  if (n < max_exact) return static_cast<int32_t>(n);
  double v = std::log(static_cast<double>(n) / static_cast<double>(max_exact)) /
             std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
             static_cast<double>(buckets - max_exact);
  int64_t b = max_exact + static_cast<int64_t>(v);
  return static_cast<int32_t>(std::min<int64_t>(b, buckets - 1));
}

void relative_bucket_by_distance(int32_t* bucket, int64_t seq_len, int64_t buckets, int64_t max_distance) {
  for (int64_t d = 0; d < seq_len; ++d) bucket[d] = relative_position_bucket(-d, buckets, max_distance);
}

namespace {

// The rows a thread works on need a row of scratch values; one per thread, grown as needed.
template <class V>
V* row_scratch(int64_t n) {
  static thread_local std::vector<V> scratch;
  if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(static_cast<size_t>(n));
  return scratch.data();
}

}  // namespace

template <class T, class G>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias, int64_t batch,
                             int64_t heads, int64_t seq_len) {
  GLAM_CUDA_DISPATCH(ctx, attention_bias_backward<T, G>(ctx, dscores, bucket, dbias, batch, heads, seq_len));
  // Sums by query-key distance first, then by bucket. The sums by distance are indexed backwards
  // (entry T-1-d for distance d = i - j), so that a row adds into them in order and the loop
  // vectorizes; one scattered add per (row, key) into a few buckets would not.
  GLAM_PARALLEL_FOR(heads)
  for (int64_t h = 0; h < heads; ++h) {
    double* by_distance = row_scratch<double>(seq_len);
    std::fill(by_distance, by_distance + seq_len, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      const T* ds = dscores + (b * heads + h) * seq_len * seq_len;
      for (int64_t i = 0; i < seq_len; ++i) {
        const T* row = ds + i * seq_len;
        double* acc = by_distance + (seq_len - 1 - i);  // acc[j] sums distance i - j
        for (int64_t j = 0; j <= i; ++j) acc[j] += static_cast<double>(static_cast<acc_t<T>>(row[j]));
      }
    }
    for (int64_t dist = 0; dist < seq_len; ++dist)
      dbias[bucket[dist] * heads + h] += static_cast<G>(by_distance[seq_len - 1 - dist]);
  }
}

template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len, RelativeBias<T> bias) {
  GLAM_CUDA_DISPATCH(ctx, causal_softmax_forward<T>(ctx, scores, rows, seq_len, bias));
  using V = acc_t<T>;
  // The bias of each head by query-key distance, backwards (entry T-1-d for distance d), so that a
  // row reads it in order: the loops below then vectorize.
  std::vector<V> bias_backwards;
  if (bias.table) {
    bias_backwards.resize(static_cast<size_t>(bias.heads * seq_len));
    for (int64_t h = 0; h < bias.heads; ++h)
      for (int64_t dist = 0; dist < seq_len; ++dist)
        bias_backwards[static_cast<size_t>(h * seq_len + seq_len - 1 - dist)] = bias.at(dist, 0, h);
  }
  GLAM_PARALLEL_FOR(rows / 32)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % seq_len, h = (r / seq_len) % bias.heads, len = i + 1;
    T* s = scores + r * seq_len;
    // The biased scores, then their exponentials, in the compute type: a bf16 row is rounded once,
    // as a probability.
    V* x = row_scratch<V>(seq_len);
    if (bias.table) {
      const V* b = bias_backwards.data() + h * seq_len + (seq_len - 1 - i);  // b[j]: the bias of distance i - j
      for (int64_t j = 0; j < len; ++j) x[j] = static_cast<V>(s[j]) + b[j];
    } else {
      for (int64_t j = 0; j < len; ++j) x[j] = static_cast<V>(s[j]);
    }
    const V mx = cpu::max_of(x, len);
    for (int64_t j = 0; j < len; ++j) x[j] = cpu::fast_exp(x[j] - mx);
    const V inv = static_cast<V>(1.0 / cpu::sum_of<double>(x, len));  // float64 sum, as on the GPU
    for (int64_t j = 0; j < len; ++j) s[j] = static_cast<T>(x[j] * inv);
    for (int64_t j = len; j < seq_len; ++j) s[j] = T(0);
  }
}

template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len,
                             RelativeBiasGrad<acc_t<T>> bias_grad) {
  GLAM_CUDA_DISPATCH(ctx, causal_softmax_backward<T>(ctx, probs, dprobs, rows, seq_len, bias_grad));
  using V = acc_t<T>;
  GLAM_PARALLEL_FOR(rows / 32)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = r % seq_len + 1;
    const T* p = probs + r * seq_len;
    T* d = dprobs + r * seq_len;
    V* pd = row_scratch<V>(seq_len);
    for (int64_t j = 0; j < len; ++j) pd[j] = static_cast<V>(p[j]) * static_cast<V>(d[j]);
    const V dot = cpu::sum_of<V>(pd, len);
    for (int64_t j = 0; j < len; ++j) d[j] = static_cast<T>(static_cast<V>(p[j]) * (static_cast<V>(d[j]) - dot));
    for (int64_t j = len; j < seq_len; ++j) d[j] = T(0);
  }
  // On the CPU the sum is a second pass: the rows are in cache only a block at a time either way.
  if (bias_grad.dbias)
    attention_bias_backward<T, acc_t<T>>(ctx, dprobs, bias_grad.bucket, bias_grad.dbias,
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

}  // namespace glam::kernels
