#include "embedding.h"

#include <cstring>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, embedding_forward<T>(ctx, ids, table, out, tokens, dim));
  GLAM_PARALLEL_FOR(tokens / 64)
  for (int64_t t = 0; t < tokens; ++t)
    std::memcpy(out + t * dim, table + static_cast<int64_t>(ids[t]) * dim, sizeof(T) * static_cast<size_t>(dim));
}

template <class T, class G>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, embedding_backward<T, G>(ctx, ids, dout, dtable, tokens, dim));
  for (int64_t t = 0; t < tokens; ++t) {
    G* row = dtable + static_cast<int64_t>(ids[t]) * dim;
    const T* g = dout + t * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] += g[i];
  }
}

#define GLAM_INSTANTIATE(T, G)                                                                                  \
  template void embedding_forward<T>(const KernelContext&, const int32_t*, const T*, T*, int64_t, int64_t);     \
  template void embedding_backward<T, G>(const KernelContext&, const int32_t*, const T*, G*, int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels
