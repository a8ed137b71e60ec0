#include "activation.h"

#include <cmath>
#include <stdexcept>

#include "cpu/parallel.h"

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

// value and derivative of the activation
template <class T>
inline void act(Activation a, T x, T& f, T& df) {
  switch (a) {
    case Activation::kGelu: {
      T u = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
      T th = std::tanh(u);
      f = T(0.5) * x * (T(1) + th);
      T du = static_cast<T>(kSqrt2OverPi) * (T(1) + T(3) * static_cast<T>(kGeluCubic) * x * x);
      df = T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du;
      return;
    }
    case Activation::kRelu:
      f = x > T(0) ? x : T(0);
      df = x > T(0) ? T(1) : T(0);
      return;
    case Activation::kSilu: {
      T s = T(1) / (T(1) + std::exp(-x));
      f = x * s;
      df = s * (T(1) + x * (T(1) - s));
      return;
    }
  }
}

template <class T>
inline T act_value(Activation a, T x) {
  switch (a) {
    case Activation::kGelu: {
      T u = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    case Activation::kRelu: return x > T(0) ? x : T(0);
    case Activation::kSilu: return x / (T(1) + std::exp(-x));
  }
  return x;
}

}  // namespace

template <class T>
void activation_forward(const KernelContext&, Activation a, const T* h0, const T* h1, T* y, int64_t n) {
  if (h1) {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) y[i] = act_value(a, h0[i]) * h1[i];
  } else {
    GLAM_PARALLEL_FOR(n / 4096)
    for (int64_t i = 0; i < n; ++i) y[i] = act_value(a, h0[i]);
  }
}

template <class T>
void activation_backward(const KernelContext&, Activation a, const T* dy, const T* h0, const T* h1, T* dh0, T* dh1,
                         int64_t n) {
  GLAM_PARALLEL_FOR(n / 4096)
  for (int64_t i = 0; i < n; ++i) {
    T f = 0, df = 0;
    act(a, h0[i], f, df);
    if (h1) {
      dh0[i] = dy[i] * h1[i] * df;
      dh1[i] = dy[i] * f;
    } else {
      dh0[i] = dy[i] * df;
    }
  }
}

#define GLAM_INSTANTIATE(T)                                                                                     \
  template void activation_forward<T>(const KernelContext&, Activation, const T*, const T*, T*, int64_t);       \
  template void activation_backward<T>(const KernelContext&, Activation, const T*, const T*, const T*, T*, T*,  \
                                       int64_t);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)

}  // namespace glam::kernels
