#pragma once
// Softmax cross-entropy with the output z-loss, fused with its gradient (the llm.c way): the
// forward pass writes the per-token loss terms and the gradient of the scaled loss
//   grad_scale * sum_t [ -log softmax(logits_t)[target_t] + z_weight * logsumexp(logits_t)^2 ].
#include <cstdint>

#include "kernel_context.h"
#include "shard_reduce.h"

namespace glam::kernels {

// ce[t] = cross-entropy of token t, lse[t] = logsumexp of its logits. dlogits (D: T, or bf16 for the
// bf16 model's products from float32 logits) may alias logits when D is T.
template <class T, class D = T>
void softmax_xent_forward_backward(const KernelContext& ctx, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, D* dlogits);

// The same with the vocabulary split over tensor-parallel ranks (Megatron-LM's vocabulary-parallel
// cross-entropy): `logits` holds this slice's `vocab` logits of every token, from vocabulary id
// `first_id`. The rows' largest logit, then their exponentials' sums and target logits are combined
// over the slices (`reduce`: two collectives of `tokens` and 2 x `tokens` values); every slice gets the
// whole vocabulary's ce and lse, and the gradient of its own logits. `reduce` gets host memory on
// either backend (on a GPU, three passes over the logits instead of two).
template <class T, class D = T>
void softmax_xent_forward_backward_sliced(const KernelContext& ctx, const T* logits, const int32_t* targets,
                                          int64_t tokens, int64_t vocab, int64_t first_id, double z_weight,
                                          double grad_scale, T* ce, T* lse, D* dlogits, const ShardReduce& reduce);

}  // namespace glam::kernels
