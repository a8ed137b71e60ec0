#include "embedding.h"

#include <algorithm>
#include <cstring>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

namespace {
// The row of id `id` in the table, or -1 when the table does not hold it.
int64_t held_row(int32_t id, EmbeddingRows held) {
  const int64_t r = static_cast<int64_t>(id) - held.first;
  return held.rows >= 0 && (r < 0 || r >= held.rows) ? -1 : r;
}
}  // namespace

template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim,
                       EmbeddingRows held) {
  GLAM_CUDA_DISPATCH(ctx, embedding_forward<T>(ctx, ids, table, out, tokens, dim, held));
  GLAM_PARALLEL_FOR(tokens / 64)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t r = held_row(ids[t], held);
    if (r >= 0) std::memcpy(out + t * dim, table + r * dim, sizeof(T) * static_cast<size_t>(dim));
    else std::fill(out + t * dim, out + (t + 1) * dim, T(0));
  }
}

template <class T, class G>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim, EmbeddingRows held) {
  GLAM_CUDA_DISPATCH(ctx, embedding_backward<T, G>(ctx, ids, dout, dtable, tokens, dim, held));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t r = held_row(ids[t], held);
    if (r < 0) continue;
    G* row = dtable + r * dim;
    const T* g = dout + t * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] += g[i];
  }
}

#define GLAM_INSTANTIATE(T, G)                                                                                   \
  template void embedding_forward<T>(const KernelContext&, const int32_t*, const T*, T*, int64_t, int64_t,       \
                                     EmbeddingRows);                                                             \
  template void embedding_backward<T, G>(const KernelContext&, const int32_t*, const T*, G*, int64_t, int64_t,   \
                                         EmbeddingRows);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels
