// Adafactor against a direct transcription of Shazeer and Stern (2018), Algorithms 4 and 5
// (beta1 = 0, relative step, update clipping), written with row and column sums as published.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "adafactor.h"

namespace glam::kernels {
namespace {

const KernelContext ctx;

double rms(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s / static_cast<double>(x.size()));
}

// One step of the published update. R, C (factored) or V (vector) carried between calls.
void paper_step(std::vector<double>& x, const std::vector<double>& g, std::vector<double>& r, std::vector<double>& c,
                std::vector<double>& v, int64_t n, int64_t m, int64_t t) {
  const double eps1 = 1e-30, eps2 = 1e-3, d = 1.0;
  double rho = std::min(1e-2, 1.0 / std::sqrt(static_cast<double>(t)));
  double alpha = std::max(eps2, rms(x)) * rho;
  double beta2 = 1.0 - std::pow(static_cast<double>(t), -0.8);
  std::vector<double> u(x.size());
  if (n > 1 && m > 1) {
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t j = 0; j < m; ++j) s += g[i * m + j] * g[i * m + j] + eps1;  // (G^2 + eps1 1 1^T) 1_m
      r[i] = beta2 * r[i] + (1 - beta2) * s;
    }
    for (int64_t j = 0; j < m; ++j) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += g[i * m + j] * g[i * m + j] + eps1;  // 1_n^T (G^2 + eps1 1 1^T)
      c[j] = beta2 * c[j] + (1 - beta2) * s;
    }
    double rsum = 0;
    for (double ri : r) rsum += ri;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) u[i * m + j] = g[i * m + j] / std::sqrt(r[i] * c[j] / rsum);  // V = R C / 1^T R
  } else {
    for (size_t i = 0; i < x.size(); ++i) {
      v[i] = beta2 * v[i] + (1 - beta2) * (g[i] * g[i] + eps1);
      u[i] = g[i] / std::sqrt(v[i]);
    }
  }
  double clip = std::max(1.0, rms(u) / d);
  for (size_t i = 0; i < x.size(); ++i) x[i] -= alpha * u[i] / clip;
}

TEST(Adafactor, MatchesThePublishedUpdate) {
  std::mt19937_64 gen(21);
  std::normal_distribution<double> nd(0, 1);
  // 70 x 45: several of the CPU kernel's 32-row blocks and 16-lane sums, each with a remainder
  for (auto [n, m] : {std::pair<int64_t, int64_t>{5, 7}, {70, 45}, {1, 6}, {9, 1}, {1, 100}}) {
    std::vector<double> x(n * m), xp;
    for (auto& v : x) v = nd(gen);
    std::vector<float> xf(x.begin(), x.end());
    xp = x;
    bool fac = n > 1 && m > 1;
    std::vector<double> r(n, 0), c(m, 0), v(n * m, 0);           // paper state
    std::vector<double> rs(n, 0), cs(m, 0), vs(n * m, 0);        // kernel state (means)
    std::vector<float> rf(n, 0), cf(m, 0), vf(n * m, 0);
    for (int64_t t = 1; t <= 6; ++t) {
      std::vector<double> g(n * m);
      for (auto& e : g) e = nd(gen) * (t == 3 ? 1e-3 : 1.0);  // includes a small-gradient step
      std::vector<float> gf(g.begin(), g.end());
      paper_step(xp, g, r, c, v, n, m, t);
      AdafactorHyper h;
      adafactor_update<double>(ctx, x.data(), g.data(), fac ? rs.data() : nullptr, fac ? cs.data() : nullptr,
                               fac ? nullptr : vs.data(), n, m, t, h);
      adafactor_update<float>(ctx, xf.data(), gf.data(), fac ? rf.data() : nullptr, fac ? cf.data() : nullptr,
                              fac ? nullptr : vf.data(), n, m, t, h);
      for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_NEAR(x[i], xp[i], 1e-12 * (1 + std::abs(xp[i]))) << n << "x" << m << " step " << t;
        EXPECT_NEAR(xf[i], xp[i], 1e-5 * (1 + std::abs(xp[i])));
      }
    }
  }
}

// A run of same-shape tensors in one call equals one call per tensor, bit for bit, and leaves the
// gaps between spaced-out states alone.
TEST(Adafactor, RunOfTensorsEqualsOneCallPerTensor) {
  std::mt19937_64 gen(22);
  std::normal_distribution<double> nd(0, 1);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{5, 7}, {1, 6}}) {
    const bool fac = rows > 1 && cols > 1;
    const int64_t count = 3, n = rows * cols, size = fac ? rows + cols : n, stride = size + 2;
    std::vector<double> x(count * n), state(count * stride, 0.0);
    for (int64_t m = 0; m < count; ++m)
      for (int64_t i = 0; i < n; ++i) x[m * n + i] = nd(gen) * static_cast<double>(m + 1);
    for (int64_t m = 0; m < count; ++m) state[m * stride + size] = state[m * stride + size + 1] = -7.0;
    std::vector<double> xs = x, states = state;
    AdafactorHyper h;
    for (int64_t t = 1; t <= 3; ++t) {
      std::vector<double> g(count * n);
      for (int64_t m = 0; m < count; ++m)
        for (int64_t i = 0; i < n; ++i) g[m * n + i] = nd(gen) * std::pow(10.0, static_cast<double>(m));
      double* s = state.data();
      adafactor_update<double>(ctx, x.data(), g.data(), fac ? s : nullptr, fac ? s + rows : nullptr, fac ? nullptr : s,
                               rows, cols, t, h, count, stride);
      for (int64_t m = 0; m < count; ++m) {
        double* sm = states.data() + m * stride;
        adafactor_update<double>(ctx, xs.data() + m * n, g.data() + m * n, fac ? sm : nullptr, fac ? sm + rows : nullptr,
                                 fac ? nullptr : sm, rows, cols, t, h);
      }
    }
    EXPECT_EQ(x, xs) << rows << "x" << cols;
    EXPECT_EQ(state, states) << rows << "x" << cols;
    for (int64_t m = 0; m < count; ++m) EXPECT_EQ(state[m * stride + size + 1], -7.0);
    // States closer together than their size would overlap: refused.
    EXPECT_THROW(adafactor_update<double>(ctx, x.data(), x.data(), fac ? state.data() : nullptr,
                                          fac ? state.data() + rows : nullptr, fac ? nullptr : state.data(), rows, cols,
                                          4, h, count, size - 1),
                 std::invalid_argument);
  }
}

TEST(Adafactor, StepSizeSchedule) {
  AdafactorHyper h;
  EXPECT_DOUBLE_EQ(adafactor_step_size(h, 1), 1e-2);
  EXPECT_DOUBLE_EQ(adafactor_step_size(h, 10000), 1e-2);
  EXPECT_DOUBLE_EQ(adafactor_step_size(h, 40000), 1.0 / 200);
}

}  // namespace
}  // namespace glam::kernels
