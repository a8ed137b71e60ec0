#include "moe.h"

#include <cstring>

#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

namespace {
// out[t,:] += sum_k weight(t*top_k + k) * buf[loc[t,k],:] over kept copies. Each element sums in
// acc_t<T> and is stored once (one rounding for bf16), as on the GPU.
template <class T, class Weight>
void gather_add(const T* buf, const int32_t* loc, int64_t tokens, int64_t top_k, int64_t dim, T* out, Weight weight) {
  GLAM_PARALLEL_FOR(tokens / 64)
  for (int64_t t = 0; t < tokens; ++t) {
    T* dst = out + t * dim;
    for (int64_t i = 0; i < dim; ++i) {
      acc_t<T> acc = dst[i];
      for (int64_t c = 0; c < top_k; ++c) {
        const int32_t l = loc[t * top_k + c];
        if (l >= 0) acc += weight(t * top_k + c) * buf[static_cast<int64_t>(l) * dim + i];
      }
      dst[i] = acc;
    }
  }
}
}  // namespace

template <class T>
void moe_dispatch_forward(const KernelContext& ctx, const T* x, const int32_t* slot_token, T* buf, int64_t slots,
                          int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, moe_dispatch_forward<T>(ctx, x, slot_token, buf, slots, dim));
  GLAM_PARALLEL_FOR(slots / 64)
  for (int64_t s = 0; s < slots; ++s) {
    T* row = buf + s * dim;
    if (slot_token[s] >= 0)
      std::memcpy(row, x + static_cast<int64_t>(slot_token[s]) * dim, sizeof(T) * static_cast<size_t>(dim));
    else
      std::memset(row, 0, sizeof(T) * static_cast<size_t>(dim));
  }
}

template <class T>
void moe_dispatch_backward(const KernelContext& ctx, const T* dbuf, const int32_t* loc, T* dx, int64_t tokens,
                           int64_t top_k, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, moe_dispatch_backward<T>(ctx, dbuf, loc, dx, tokens, top_k, dim));
  gather_add(dbuf, loc, tokens, top_k, dim, dx, [](int64_t) { return acc_t<T>(1); });
}

template <class T, class G>
void moe_combine_forward(const KernelContext& ctx, const T* buf, const int32_t* loc, const G* gate, T* y, int64_t tokens,
                         int64_t top_k, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, moe_combine_forward<T, G>(ctx, buf, loc, gate, y, tokens, top_k, dim));
  gather_add(buf, loc, tokens, top_k, dim, y, [gate](int64_t idx) { return static_cast<acc_t<T>>(gate[idx]); });
}

template <class T, class G>
void moe_combine_backward(const KernelContext& ctx, const T* dy, const T* buf, const int32_t* loc,
                          const int32_t* slot_token, const G* gate, T* dbuf, G* dgate, int64_t tokens, int64_t top_k,
                          int64_t slots, int64_t dim) {
  GLAM_CUDA_DISPATCH(ctx, moe_combine_backward<T, G>(ctx, dy, buf, loc, slot_token, gate, dbuf, dgate, tokens, top_k, slots,
                                                  dim));
  for (int64_t s = 0; s < slots; ++s)
    if (slot_token[s] < 0) std::memset(dbuf + s * dim, 0, sizeof(T) * static_cast<size_t>(dim));
  GLAM_PARALLEL_FOR(tokens / 64)
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < top_k; ++c) {
      int64_t idx = t * top_k + c;
      int32_t l = loc[idx];
      if (l < 0) {
        dgate[idx] = G(0);
        continue;
      }
      const T* g = dy + t * dim;
      const T* out = buf + static_cast<int64_t>(l) * dim;
      T* d = dbuf + static_cast<int64_t>(l) * dim;
      const acc_t<T> w = gate[idx];
      acc_t<T> dot = 0;
      for (int64_t i = 0; i < dim; ++i) {
        d[i] = w * g[i];
        dot += g[i] * out[i];
      }
      dgate[idx] = dot;
    }
}

template <class T>
void swap_leading_axes(const KernelContext& ctx, const T* in, T* out, int64_t outer, int64_t inner, int64_t block) {
  GLAM_CUDA_DISPATCH(ctx, swap_leading_axes<T>(ctx, in, out, outer, inner, block));
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t b = 0; b < inner; ++b)
      std::memcpy(out + (b * outer + a) * block, in + (a * inner + b) * block, sizeof(T) * static_cast<size_t>(block));
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

}  // namespace glam::kernels
