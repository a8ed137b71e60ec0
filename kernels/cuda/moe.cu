// MoE dispatch and combine as index gather / scatter, and the block reorder around the all-to-alls.
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

template <class T>
__global__ void dispatch_fwd(const T* x, const int32_t* slot_token, T* buf, int64_t slots, int64_t dim) {
  GLAM_GRID_STRIDE(i, slots * dim) {
    int64_t s = i / dim, c = i - s * dim;
    int32_t tok = slot_token[s];
    buf[i] = tok >= 0 ? x[static_cast<int64_t>(tok) * dim + c] : T(0);
  }
}

template <class T>
__global__ void dispatch_bwd(const T* dbuf, const int32_t* loc, T* dx, int64_t tokens, int64_t top_k, int64_t dim) {
  GLAM_GRID_STRIDE(i, tokens * dim) {
    int64_t t = i / dim, c = i - t * dim;
    acc_t<T> acc = dx[i];
    for (int64_t j = 0; j < top_k; ++j) {
      int32_t l = loc[t * top_k + j];
      if (l >= 0) acc += dbuf[static_cast<int64_t>(l) * dim + c];
    }
    dx[i] = acc;
  }
}

template <class T, class G>
__global__ void combine_fwd(const T* buf, const int32_t* loc, const G* gate, T* y, int64_t tokens, int64_t top_k,
                            int64_t dim) {
  GLAM_GRID_STRIDE(i, tokens * dim) {
    int64_t t = i / dim, c = i - t * dim;
    acc_t<T> acc = y[i];
    for (int64_t j = 0; j < top_k; ++j) {
      int32_t l = loc[t * top_k + j];
      if (l >= 0) acc += gate[t * top_k + j] * buf[static_cast<int64_t>(l) * dim + c];
    }
    y[i] = acc;
  }
}

template <class T>
__global__ void zero_empty_slots(const int32_t* slot_token, T* dbuf, int64_t slots, int64_t dim) {
  GLAM_GRID_STRIDE(i, slots * dim) {
    if (slot_token[i / dim] < 0) dbuf[i] = T(0);
  }
}

// One block per copy (token t, choice j).
template <class T, class G>
__global__ void combine_bwd(const T* dy, const T* buf, const int32_t* loc, const G* gate, T* dbuf, G* dgate,
                            int64_t top_k, int64_t dim) {
  const int64_t idx = blockIdx.x, t = idx / top_k;
  const int32_t l = loc[idx];
  if (l < 0) {
    if (threadIdx.x == 0) dgate[idx] = G(0);
    return;
  }
  const T* g = dy + t * dim;
  const T* out = buf + static_cast<int64_t>(l) * dim;
  T* d = dbuf + static_cast<int64_t>(l) * dim;
  const acc_t<T> w = gate[idx];
  acc_t<T> dot = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    d[i] = w * g[i];
    dot += g[i] * out[i];
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) dgate[idx] = dot;
}

template <class T>
__global__ void swap_axes(const T* in, T* out, int64_t outer, int64_t inner, int64_t block) {
  GLAM_GRID_STRIDE(i, outer * inner * block) {
    int64_t x = i % block, ab = i / block;
    int64_t b = ab % inner, a = ab / inner;  // i indexes in[a, b, x]
    out[(b * outer + a) * block + x] = in[i];
  }
}

}  // namespace

template <class T>
void moe_dispatch_forward(const KernelContext& ctx, const T* x, const int32_t* slot_token, T* buf, int64_t slots,
                          int64_t dim) {
  if (slots * dim <= 0) return;
  dispatch_fwd<<<grid_for(slots * dim, 256), 256, 0, stream_of(ctx)>>>(x, slot_token, buf, slots, dim);
  GLAM_CUDA_LAUNCHED();
}

template <class T>
void moe_dispatch_backward(const KernelContext& ctx, const T* dbuf, const int32_t* loc, T* dx, int64_t tokens,
                           int64_t top_k, int64_t dim) {
  if (tokens * dim <= 0) return;
  dispatch_bwd<<<grid_for(tokens * dim, 256), 256, 0, stream_of(ctx)>>>(dbuf, loc, dx, tokens, top_k, dim);
  GLAM_CUDA_LAUNCHED();
}

template <class T, class G>
void moe_combine_forward(const KernelContext& ctx, const T* buf, const int32_t* loc, const G* gate, T* y,
                         int64_t tokens, int64_t top_k, int64_t dim) {
  if (tokens * dim <= 0) return;
  combine_fwd<<<grid_for(tokens * dim, 256), 256, 0, stream_of(ctx)>>>(buf, loc, gate, y, tokens, top_k, dim);
  GLAM_CUDA_LAUNCHED();
}

template <class T, class G>
void moe_combine_backward(const KernelContext& ctx, const T* dy, const T* buf, const int32_t* loc,
                          const int32_t* slot_token, const G* gate, T* dbuf, G* dgate, int64_t tokens, int64_t top_k,
                          int64_t slots, int64_t dim) {
  cudaStream_t s = stream_of(ctx);
  if (slots * dim > 0) {
    zero_empty_slots<<<grid_for(slots * dim, 256), 256, 0, s>>>(slot_token, dbuf, slots, dim);
    GLAM_CUDA_LAUNCHED();
  }
  if (tokens * top_k > 0) {
    combine_bwd<<<static_cast<unsigned>(tokens * top_k), 128, 0, s>>>(dy, buf, loc, gate, dbuf, dgate, top_k, dim);
    GLAM_CUDA_LAUNCHED();
  }
}

template <class T>
void swap_leading_axes(const KernelContext& ctx, const T* in, T* out, int64_t outer, int64_t inner, int64_t block) {
  const int64_t n = outer * inner * block;
  if (n <= 0) return;
  swap_axes<<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(in, out, outer, inner, block);
  GLAM_CUDA_LAUNCHED();
}

#define GLAM_INSTANTIATE(T, G)                                                                                     \
  template void moe_dispatch_forward<T>(const KernelContext&, const T*, const int32_t*, T*, int64_t, int64_t);     \
  template void moe_dispatch_backward<T>(const KernelContext&, const T*, const int32_t*, T*, int64_t, int64_t,     \
                                         int64_t);                                                                 \
  template void moe_combine_forward<T, G>(const KernelContext&, const T*, const int32_t*, const G*, T*, int64_t,   \
                                          int64_t, int64_t);                                                       \
  template void moe_combine_backward<T, G>(const KernelContext&, const T*, const T*, const int32_t*,               \
                                           const int32_t*, const G*, T*, G*, int64_t, int64_t, int64_t, int64_t);  \
  template void swap_leading_axes<T>(const KernelContext&, const T*, T*, int64_t, int64_t, int64_t);
GLAM_INSTANTIATE(float, float)
GLAM_INSTANTIATE(double, double)
GLAM_INSTANTIATE(bf16, float)

}  // namespace glam::kernels::cuda
