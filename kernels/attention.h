#pragma once
// The non-product parts of causal multi-head attention with a T5-style learned relative position
// bias. Scores are laid out [batch, heads, T, T]; row i (query) sees keys j <= i.
#include <cstdint>

#include "bfloat16.h"
#include "kernel_context.h"

namespace glam::kernels {

// T5's bucket of the relative position (key - query) for a unidirectional (causal) model:
// distances below buckets/2 get their own bucket, larger ones share log-spaced buckets up to
// max_distance. Host function: the table is computed once and copied to the device.
int32_t relative_position_bucket(int64_t relative_position, int64_t buckets, int64_t max_distance);
// bucket[d] for the distances d = i - j, 0 <= d < T, of query i and key j <= i: the bucket depends on
// the distance alone, so one row of T entries serves every query.
void relative_bucket_by_distance(int32_t* bucket, int64_t seq_len, int64_t buckets, int64_t max_distance);

// One layer's relative position bias as the causal softmax adds it: table[bucket[i - j] * heads + h]
// is added to the score of query i and key j <= i in head h, rows laid out [batch, heads, T, T].
// A null table adds nothing.
template <class T>
struct RelativeBias {
  const T* table = nullptr;         // [buckets, heads]
  const int32_t* bucket = nullptr;  // by distance, [T] (relative_bucket_by_distance)
  int64_t heads = 1;

  // The bias of query i and key j <= i in head h, in the compute type (0 without a table). The same
  // code in the CPU and the CUDA softmax.
  GLAM_HOST_DEVICE acc_t<T> at(int64_t i, int64_t j, int64_t h) const {
    return table ? static_cast<acc_t<T>>(table[static_cast<int64_t>(bucket[i - j]) * heads + h]) : acc_t<T>(0);
  }
};

// dbias[bucket[i - j], h] += sum_b dscores[b,h,i,j] for j <= i. G is T, or float32 for bf16 T.
template <class T, class G = T>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias,
                             int64_t batch, int64_t heads, int64_t seq_len);

// In place, per row of `rows` rows of length T: adds the relative position bias, then takes the
// softmax over j <= i (i = row % T); masked entries become 0. One pass over the scores for both
// (a separate bias kernel would read and write every score once more).
template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len,
                            RelativeBias<T> bias = {});

// The relative position bias's gradient, summed by the softmax backward as it writes the scores'
// gradient: dbias[bucket[i - j] * heads + h] += dscores[b, h, i, j] for j <= i, the sum
// attention_bias_backward adds, without reading the scores' gradient again. A null dbias sums nothing.
template <class G>
struct RelativeBiasGrad {
  G* dbias = nullptr;               // [buckets, heads]
  const int32_t* bucket = nullptr;  // by distance, [T] (relative_bucket_by_distance)
  int64_t heads = 1;
};

// dscores = probs * (dprobs - sum_j probs*dprobs), written over dprobs; with bias_grad, also the bias
// gradient of the rounded dscores (rows laid out [batch, heads, T, T]).
template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len,
                             RelativeBiasGrad<acc_t<T>> bias_grad = {});

}  // namespace glam::kernels
