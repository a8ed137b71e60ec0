#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

template <class T, class G>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias, int64_t batch,
                             int64_t heads, int64_t seq_len) {
  GLAM_CUDA_DISPATCH(ctx, attention_bias_backward<T, G>(ctx, dscores, bucket, dbias, batch, heads, seq_len));
  GLAM_PARALLEL_FOR(heads)
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t b = 0; b < batch; ++b) {
      const T* ds = dscores + (b * heads + h) * seq_len * seq_len;
      for (int64_t i = 0; i < seq_len; ++i)
        for (int64_t j = 0; j <= i; ++j) dbias[bucket[i - j] * heads + h] += ds[i * seq_len + j];
    }
}

template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len, RelativeBias<T> bias) {
  GLAM_CUDA_DISPATCH(ctx, causal_softmax_forward<T>(ctx, scores, rows, seq_len, bias));
  using V = acc_t<T>;
  GLAM_PARALLEL_FOR(rows / 32)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % seq_len, h = (r / seq_len) % bias.heads;
    T* s = scores + r * seq_len;
    // The biased score of key j, in the compute type: a bf16 score is not rounded again after the bias.
    auto score = [&](int64_t j) { return static_cast<V>(s[j]) + bias.at(i, j, h); };
    V mx = score(0);
    for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, score(j));
    // The exponentials are recomputed rather than stored between the passes, so that a bf16 row is
    // rounded once, as a probability.
    double sum = 0;  // float64, as on the GPU
    for (int64_t j = 0; j <= i; ++j) sum += std::exp(score(j) - mx);
    const V inv = static_cast<V>(1.0 / sum);
    for (int64_t j = 0; j <= i; ++j) s[j] = std::exp(score(j) - mx) * inv;
    for (int64_t j = i + 1; j < seq_len; ++j) s[j] = T(0);
  }
}

template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len) {
  GLAM_CUDA_DISPATCH(ctx, causal_softmax_backward<T>(ctx, probs, dprobs, rows, seq_len));
  GLAM_PARALLEL_FOR(rows / 32)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t i = r % seq_len;
    const T* p = probs + r * seq_len;
    T* d = dprobs + r * seq_len;
    acc_t<T> dot = 0;
    for (int64_t j = 0; j <= i; ++j) dot += p[j] * d[j];
    for (int64_t j = 0; j <= i; ++j) d[j] = p[j] * (d[j] - dot);
    for (int64_t j = i + 1; j < seq_len; ++j) d[j] = T(0);
  }
}

#define GLAM_INSTANTIATE(T, G)                                                                                      \
  template void attention_bias_backward<T, G>(const KernelContext&, const T*, const int32_t*, G*, int64_t, int64_t, \
                                              int64_t);                                                             \
  template void causal_softmax_forward<T>(const KernelContext&, T*, int64_t, int64_t, RelativeBias<T>);             \
  template void causal_softmax_backward<T>(const KernelContext&, const T*, T*, int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels
