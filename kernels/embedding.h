#pragma once
// Token embedding lookup and its gradient.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

// out[t,:] = table[ids[t],:]
template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim);

// dtable[ids[t],:] += dout[t,:] (tokens in order, so the sum is deterministic). G is T, or float32
// for bf16 T (a frequent token's gradient sums thousands of rows).
template <class T, class G = T>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim);

}  // namespace glam::kernels
