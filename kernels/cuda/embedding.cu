// Embedding lookup (gather) and its gradient (scatter-add with atomics: the order of the sums over
// repeated tokens is not fixed, unlike the CPU's token order).
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

// The row of id `id` in the table, or -1 when the table does not hold it.
__device__ int64_t held_row(int32_t id, EmbeddingRows held) {
  const int64_t r = static_cast<int64_t>(id) - held.first;
  return held.rows >= 0 && (r < 0 || r >= held.rows) ? -1 : r;
}

template <class T>
__global__ void emb_fwd(const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim, EmbeddingRows held) {
  GLAM_GRID_STRIDE(i, tokens * dim) {
    int64_t t = i / dim, c = i - t * dim;
    const int64_t r = held_row(ids[t], held);
    out[i] = r >= 0 ? table[r * dim + c] : T(0);
  }
}

template <class T, class G>
__global__ void emb_bwd(const int32_t* ids, const T* dout, G* dtable, int64_t tokens, int64_t dim, EmbeddingRows held) {
  GLAM_GRID_STRIDE(i, tokens * dim) {
    int64_t t = i / dim, c = i - t * dim;
    const int64_t r = held_row(ids[t], held);
    if (r >= 0) atomicAdd(dtable + r * dim + c, static_cast<G>(dout[i]));
  }
}

}  // namespace

template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim,
                       EmbeddingRows held) {
  if (tokens * dim <= 0) return;
  emb_fwd<<<grid_for(tokens * dim, 256), 256, 0, stream_of(ctx)>>>(ids, table, out, tokens, dim, held);
  GLAM_CUDA_LAUNCHED();
}

template <class T, class G>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim, EmbeddingRows held) {
  if (tokens * dim <= 0) return;
  emb_bwd<<<grid_for(tokens * dim, 256), 256, 0, stream_of(ctx)>>>(ids, dout, dtable, tokens, dim, held);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T, G)                                                                                   \
  template void embedding_forward<T>(const KernelContext&, const int32_t*, const T*, T*, int64_t, int64_t,       \
                                     EmbeddingRows);                                                             \
  template void embedding_backward<T, G>(const KernelContext&, const int32_t*, const T*, G*, int64_t, int64_t,   \
                                         EmbeddingRows);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
