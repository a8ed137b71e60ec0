#pragma once
// Finite differences in float64 for the gradient checks.
#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace glam::testing {

inline std::vector<double> random_vector(size_t n, std::mt19937_64& gen, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Central differences of f with respect to every element of x (x is restored).
inline std::vector<double> numeric_gradient(const std::function<double()>& f, std::vector<double>& x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double old = x[i];
    x[i] = old + h;
    double fp = f();
    x[i] = old - h;
    double fm = f();
    x[i] = old;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// max |a - b| / max(1, max |b|)
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double err = 0, scale = 1e-12;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err / scale;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace glam::testing
