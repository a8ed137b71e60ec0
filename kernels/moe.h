#pragma once
// MoE dispatch and combine as index gather and scatter (never the dense G x S x E x C einsum),
// and the block reordering around the expert-parallel all-to-alls.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

// buf[s,:] = x[slot_token[s],:], or 0 for an empty slot.
template <class T>
void moe_dispatch_forward(const KernelContext& ctx, const T* x, const int32_t* slot_token, T* buf, int64_t slots,
                          int64_t dim);
// dx[t,:] += sum_k dbuf[loc[t,k],:] over kept copies.
template <class T>
void moe_dispatch_backward(const KernelContext& ctx, const T* dbuf, const int32_t* loc, T* dx, int64_t tokens,
                           int64_t top_k, int64_t dim);
// y[t,:] += sum_k gate[t,k] * buf[loc[t,k],:] over kept copies. The gates (G) are T, or the router's
// float32 for bf16 T.
template <class T, class G = T>
void moe_combine_forward(const KernelContext& ctx, const T* buf, const int32_t* loc, const G* gate, T* y,
                         int64_t tokens, int64_t top_k, int64_t dim);
// dbuf[loc[t,k],:] = gate[t,k] * dy[t,:] (empty slots 0); dgate[t,k] = dy[t,:] . buf[loc[t,k],:] (0 if dropped).
template <class T, class G = T>
void moe_combine_backward(const KernelContext& ctx, const T* dy, const T* buf, const int32_t* loc,
                          const int32_t* slot_token, const G* gate, T* dbuf, G* dgate, int64_t tokens, int64_t top_k,
                          int64_t slots, int64_t dim);

// out[b,a,:] = in[a,b,:] for in laid out [outer, inner, block]: swaps the two leading axes.
template <class T>
void swap_leading_axes(const KernelContext& ctx, const T* in, T* out, int64_t outer, int64_t inner, int64_t block);

}  // namespace glam::kernels
