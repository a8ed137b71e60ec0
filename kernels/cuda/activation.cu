// FFN activations, elementwise (tanh-approximated GELU, ReLU, SiLU), plain or gated.
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace glam::kernels::cuda {
namespace {

// 1 + tanh(u) and 1 - tanh(u)^2 from e = exp(-2|u|), without the cancellation of 1 - th^2 (or of 1 + th
// for negative u) near saturation, as on the CPU (kernels/cpu/activation.cpp).
struct Gelu {
  template <class T>
  __device__ static void fd(T x, T& f, T& df) {
    const T c = static_cast<T>(0.7978845608028654), a = static_cast<T>(0.044715);
    const T u = c * (x + a * x * x * x);
    const T e = dexp(T(-2) * (u < T(0) ? -u : u)), inv = T(1) / (T(1) + e);
    const T one_plus_th = u < T(0) ? T(2) * e * inv : T(2) * inv, sech2 = T(4) * e * inv * inv;
    f = T(0.5) * x * one_plus_th;
    const T du = c * (T(1) + T(3) * a * x * x);
    df = T(0.5) * one_plus_th + T(0.5) * x * sech2 * du;
  }
};
struct Relu {
  template <class T>
  __device__ static void fd(T x, T& f, T& df) {
    f = x > T(0) ? x : T(0);
    df = x > T(0) ? T(1) : T(0);
  }
};
struct Silu {
  template <class T>
  __device__ static void fd(T x, T& f, T& df) {
    T s = T(1) / (T(1) + dexp(-x));
    f = x * s;
    df = s * (T(1) + x * (T(1) - s));
  }
};

// Elements are loaded into acc_t<T> (float32 for bf16) and computed there; in 16-byte packs where the
// arrays allow (common.cuh), each pack read whole before it is written, by one thread, so an output may
// be one of the inputs.
template <class A, class T, bool kPacked>
__global__ void act_fwd(const T* h0, const T* h1, T* y, int64_t n) {
  using V = acc_t<T>;
  if constexpr (kPacked) {
    constexpr int P = Pack<T>::kSize;
    GLAM_GRID_STRIDE(k, n / P) {
      const Pack<T> a = load_pack(h0, k);
      Pack<T> b, out;
      if (h1) b = load_pack(h1, k);
      for (int j = 0; j < P; ++j) {
        V f, df;
        A::fd(static_cast<V>(a.v[j]), f, df);
        out.v[j] = h1 ? f * static_cast<V>(b.v[j]) : f;
      }
      store_pack(y, k, out);
    }
  } else {
    GLAM_GRID_STRIDE(i, n) {
      V f, df;
      A::fd(static_cast<V>(h0[i]), f, df);
      y[i] = h1 ? f * static_cast<V>(h1[i]) : f;
    }
  }
}

template <class A, class T, bool kPacked>
__global__ void act_bwd(const T* dy, const T* h0, const T* h1, T* dh0, T* dh1, int64_t n) {
  using V = acc_t<T>;
  if constexpr (kPacked) {
    constexpr int P = Pack<T>::kSize;
    GLAM_GRID_STRIDE(k, n / P) {
      const Pack<T> g = load_pack(dy, k), a = load_pack(h0, k);
      Pack<T> b, d0, d1;
      if (h1) b = load_pack(h1, k);
      for (int j = 0; j < P; ++j) {
        V f, df;
        A::fd(static_cast<V>(a.v[j]), f, df);
        if (h1) {
          d0.v[j] = g.v[j] * b.v[j] * df;
          d1.v[j] = g.v[j] * f;
        } else {
          d0.v[j] = g.v[j] * df;
        }
      }
      store_pack(dh0, k, d0);
      if (h1) store_pack(dh1, k, d1);
    }
  } else {
    GLAM_GRID_STRIDE(i, n) {
      V f, df;
      A::fd(static_cast<V>(h0[i]), f, df);
      if (h1) {
        dh0[i] = dy[i] * h1[i] * df;
        dh1[i] = dy[i] * f;
      } else {
        dh0[i] = dy[i] * df;
      }
    }
  }
}

template <class A, class T>
void fwd(const KernelContext& ctx, const T* h0, const T* h1, T* y, int64_t n) {
  if (packs_fit<T>(n, {h0, h1, y}))
    act_fwd<A, T, true><<<grid_for(n / Pack<T>::kSize, 256), 256, 0, stream_of(ctx)>>>(h0, h1, y, n);
  else
    act_fwd<A, T, false><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(h0, h1, y, n);
  GLAM_CUDA_LAUNCHED();
}
template <class A, class T>
void bwd(const KernelContext& ctx, const T* dy, const T* h0, const T* h1, T* dh0, T* dh1, int64_t n) {
  if (packs_fit<T>(n, {dy, h0, h1, dh0, dh1}))
    act_bwd<A, T, true><<<grid_for(n / Pack<T>::kSize, 256), 256, 0, stream_of(ctx)>>>(dy, h0, h1, dh0, dh1, n);
  else
    act_bwd<A, T, false><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(dy, h0, h1, dh0, dh1, n);
  GLAM_CUDA_LAUNCHED();
}

}  // namespace

template <class T>
void activation_forward(const KernelContext& ctx, Activation a, const T* h0, const T* h1, T* y, int64_t n) {
  if (n <= 0) return;
  switch (a) {
    case Activation::kGelu: return fwd<Gelu>(ctx, h0, h1, y, n);
    case Activation::kRelu: return fwd<Relu>(ctx, h0, h1, y, n);
    case Activation::kSilu: return fwd<Silu>(ctx, h0, h1, y, n);
  }
}

template <class T>
void activation_backward(const KernelContext& ctx, Activation a, const T* dy, const T* h0, const T* h1, T* dh0, T* dh1,
                         int64_t n) {
  if (n <= 0) return;
  switch (a) {
    case Activation::kGelu: return bwd<Gelu>(ctx, dy, h0, h1, dh0, dh1, n);
    case Activation::kRelu: return bwd<Relu>(ctx, dy, h0, h1, dh0, dh1, n);
    case Activation::kSilu: return bwd<Silu>(ctx, dy, h0, h1, dh0, dh1, n);
  }
}

#define GLAM_INSTANTIATE(T)                                                                                     \
  template void activation_forward<T>(const KernelContext&, Activation, const T*, const T*, T*, int64_t);       \
  template void activation_backward<T>(const KernelContext&, Activation, const T*, const T*, const T*, T*, T*,  \
                                       int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)
GLAM_INSTANTIATE(bf16)

}  // namespace glam::kernels::cuda
