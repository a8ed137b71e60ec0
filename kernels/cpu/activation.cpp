#include "activation.h"

#include <cmath>
#include <stdexcept>

#include "cpu/fast_math.h"
#include "cpu/parallel.h"
#include "cpu/dispatch.h"

namespace glam::kernels {

Activation parse_activation(const std::string& name) {
  if (name == "gelu") return Activation::kGelu;
  if (name == "relu") return Activation::kRelu;
  if (name == "silu") return Activation::kSilu;
  throw std::invalid_argument("unknown activation: " + name);
}

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCubic = 0.044715;

// Each activation as a value and a (value, derivative) function; loops are instantiated per
// activation so that the compiler vectorizes them.
// tanh approximation (T5, GLaM). 1 + tanh(u) and 1 - tanh(u)^2 come from e = exp(-2|u|): written as
// 1 - th^2 they cancel near saturation (an absolute error of 1e-7 in th is a relative error of up to
// 100% in 1 - th^2), and so does 1 + th for negative u.
struct Gelu {
  template <class T>
  static void parts(T x, T& u, T& one_plus_th, T& sech2) {
    u = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
    // fast_exp clamps below exp(-87): past |u| = 44, e is 0 as it is in exact arithmetic to float precision
    const T e = std::abs(u) < T(44) ? cpu::fast_exp(T(-2) * std::abs(u)) : T(0), inv = T(1) / (T(1) + e);
    one_plus_th = u < T(0) ? T(2) * e * inv : T(2) * inv;
    sech2 = T(4) * e * inv * inv;
  }
  template <class T>
  static T f(T x) {
    T u, one_plus_th, sech2;
    parts(x, u, one_plus_th, sech2);
    return T(0.5) * x * one_plus_th;
  }
  template <class T>
  static void fd(T x, T& f, T& df) {
    T u, one_plus_th, sech2;
    parts(x, u, one_plus_th, sech2);
    f = T(0.5) * x * one_plus_th;
    const T du = static_cast<T>(kSqrt2OverPi) * (T(1) + T(3) * static_cast<T>(kGeluCubic) * x * x);
    df = T(0.5) * one_plus_th + T(0.5) * x * sech2 * du;
  }
};
struct Relu {
  template <class T>
  static T f(T x) { return x > T(0) ? x : T(0); }
  template <class T>
  static void fd(T x, T& f, T& df) {
    f = x > T(0) ? x : T(0);
    df = x > T(0) ? T(1) : T(0);
  }
};
struct Silu {
  template <class T>
  static T f(T x) { return x / (T(1) + cpu::fast_exp(-x)); }
  template <class T>
  static void fd(T x, T& f, T& df) {
    T s = T(1) / (T(1) + cpu::fast_exp(-x));
    f = x * s;
    df = s * (T(1) + x * (T(1) - s));
  }
};

// Elements are loaded into acc_t<T> (float32 for bf16) and computed there.
template <class A, class T>
void forward(const T* h0, const T* h1, T* y, int64_t n) {
  using V = acc_t<T>;
  if (h1) {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) y[i] = A::f(static_cast<V>(h0[i])) * h1[i];
  } else {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) y[i] = A::f(static_cast<V>(h0[i]));
  }
}

template <class A, class T>
void backward(const T* dy, const T* h0, const T* h1, T* dh0, T* dh1, int64_t n) {
  using V = acc_t<T>;
  if (h1) {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) {
      V f, df;
      A::fd(static_cast<V>(h0[i]), f, df);
      dh0[i] = dy[i] * h1[i] * df;
      dh1[i] = dy[i] * f;
    }
  } else {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) {
      V f, df;
      A::fd(static_cast<V>(h0[i]), f, df);
      dh0[i] = dy[i] * df;
    }
  }
}

}  // namespace

template <class T>
void activation_forward(const KernelContext& ctx, Activation a, const T* h0, const T* h1, T* y, int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, activation_forward<T>(ctx, a, h0, h1, y, n));
  switch (a) {
    case Activation::kGelu: return forward<Gelu>(h0, h1, y, n);
    case Activation::kRelu: return forward<Relu>(h0, h1, y, n);
    case Activation::kSilu: return forward<Silu>(h0, h1, y, n);
  }
}

template <class T>
void activation_backward(const KernelContext& ctx, Activation a, const T* dy, const T* h0, const T* h1, T* dh0, T* dh1,
                         int64_t n) {
  GLAM_CUDA_DISPATCH(ctx, activation_backward<T>(ctx, a, dy, h0, h1, dh0, dh1, n));
  switch (a) {
    case Activation::kGelu: return backward<Gelu>(dy, h0, h1, dh0, dh1, n);
    case Activation::kRelu: return backward<Relu>(dy, h0, h1, dh0, dh1, n);
    case Activation::kSilu: return backward<Silu>(dy, h0, h1, dh0, dh1, n);
  }
}

#define GLAM_INSTANTIATE(T)                                                                                     \
  template void activation_forward<T>(const KernelContext&, Activation, const T*, const T*, T*, int64_t);       \
  template void activation_backward<T>(const KernelContext&, Activation, const T*, const T*, const T*, T*, T*,  \
                                       int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)
GLAM_INSTANTIATE(bf16)

}  // namespace glam::kernels
