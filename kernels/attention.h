#pragma once
// The non-product parts of causal multi-head attention with a T5-style learned relative position
// bias. Scores are laid out [batch, heads, T, T]; row i (query) sees keys j <= i.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

// T5's bucket of the relative position (key - query) for a unidirectional (causal) model:
// distances below buckets/2 get their own bucket, larger ones share log-spaced buckets up to
// max_distance. Host function: the table is computed once and copied to the device.
int32_t relative_position_bucket(int64_t relative_position, int64_t buckets, int64_t max_distance);
// bucket[i*T + j] for 0 <= i, j < T.
void relative_bucket_table(int32_t* bucket, int64_t seq_len, int64_t buckets, int64_t max_distance);

// scores[b,h,i,j] += bias[bucket[i,j], h] for j <= i (bias laid out [buckets, heads]).
template <class T>
void attention_bias_forward(const KernelContext& ctx, T* scores, const T* bias, const int32_t* bucket, int64_t batch,
                            int64_t heads, int64_t seq_len);

// dbias[bucket[i,j], h] += sum_b dscores[b,h,i,j] for j <= i. G is T, or float32 for bf16 T.
template <class T, class G = T>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias,
                             int64_t batch, int64_t heads, int64_t seq_len);

// In place, per row of `rows` rows of length T: softmax over j <= i (i = row % T); masked entries become 0.
template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len);

// dscores = probs * (dprobs - sum_j probs*dprobs), written over dprobs.
template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len);

}  // namespace glam::kernels
