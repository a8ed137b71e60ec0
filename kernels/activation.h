#pragma once
// FFN activations. Plain: y = act(h0). Gated (GEGLU and friends): y = act(h0) * h1.
// GELU is the tanh approximation used by T5 and GLaM.
#include <cstdint>
#include <string>

#include "kernel_context.h"

namespace glam::kernels {

enum class Activation { kGelu, kRelu, kSilu };
Activation parse_activation(const std::string& name);  // "gelu", "relu", "silu"

// h1 == nullptr: plain. Writes y[n].
template <class T>
void activation_forward(const KernelContext& ctx, Activation act, const T* h0, const T* h1, T* y, int64_t n);

// Writes dh0[n] and, when gated, dh1[n].
template <class T>
void activation_backward(const KernelContext& ctx, Activation act, const T* dy, const T* h0, const T* h1, T* dh0,
                         T* dh1, int64_t n);

}  // namespace glam::kernels
