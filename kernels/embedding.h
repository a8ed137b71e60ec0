#pragma once
// Token embedding lookup and its gradient.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

// Which ids the table holds: `rows` consecutive ones from `first` (a vocabulary slice under tensor
// parallelism); rows < 0: every id.
struct EmbeddingRows {
  int64_t first = 0, rows = -1;
};

// out[t,:] = table[ids[t] - first,:], zeros for ids the table does not hold
template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim,
                       EmbeddingRows held = {});

// dtable[ids[t] - first,:] += dout[t,:] for the ids the table holds (tokens in order, so the sum is
// deterministic). G is T, or float32 for bf16 T (a frequent token's gradient sums thousands of rows).
template <class T, class G = T>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim, EmbeddingRows held = {});

}  // namespace glam::kernels
