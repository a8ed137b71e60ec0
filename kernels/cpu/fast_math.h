#pragma once
// exp for the float32 kernels, written so that GCC vectorizes the loops that call it (libm's expf
// and tanhf do not vectorize without -ffast-math). Cephes' expf: range reduction by ln 2 and a
// degree-6 polynomial, relative error about 2e-7 over the float range. The float64 reference path
// keeps std::exp. The kernels are built with -fno-trapping-math so that the clamps vectorize.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace glam::kernels::cpu {

inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float t = x * 1.44269504088896341f;
  float fn = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick), branch-free
  int32_t n = static_cast<int32_t>(fn);
  float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((n + 127) << 23);
}
inline double fast_exp(double x) { return std::exp(x); }

// tanh through exp: 1 - 2 / (exp(2u) + 1), exact at both saturations.
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }
inline double fast_tanh(double u) { return std::tanh(u); }

// Reductions over 16 interleaved partial results in a fixed order: GCC vectorizes them without
// -ffast-math (which would let it reorder every sum), and the result depends on n alone.
constexpr int kReductionLanes = 16;

// The largest of x[0..n), n >= 1.
template <class V>
V max_of(const V* x, int64_t n) {
  V lane[kReductionLanes];
  for (V& l : lane) l = x[0];
  int64_t j = 0;
  for (; j + kReductionLanes <= n; j += kReductionLanes)
    for (int u = 0; u < kReductionLanes; ++u) lane[u] = x[j + u] > lane[u] ? x[j + u] : lane[u];
  V m = x[0];
  for (V l : lane) m = l > m ? l : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// The sum of value(j) for j in [0, n), in the type A.
template <class A, class F>
A sum_over(int64_t n, F value) {
  A lane[kReductionLanes] = {};
  int64_t j = 0;
  for (; j + kReductionLanes <= n; j += kReductionLanes)
    for (int u = 0; u < kReductionLanes; ++u) lane[u] += value(j + u);
  A sum = 0;
  for (A l : lane) sum += l;
  for (; j < n; ++j) sum += value(j);
  return sum;
}

// The sum of x[0..n) in the type A.
template <class A, class V>
A sum_of(const V* x, int64_t n) {
  return sum_over<A>(n, [x](int64_t j) { return static_cast<A>(x[j]); });
}

}  // namespace glam::kernels::cpu
