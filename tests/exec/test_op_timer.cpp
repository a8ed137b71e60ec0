// The op timer's percentiles: interpolated between order statistics, never decreasing with p and never
// outside the samples, even for samples a few ulps apart (where the records' p10/p90 once crossed).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/op_timer.h"

namespace glam::exec {
namespace {

TEST(Percentile, InterpolatesBetweenOrderStatistics) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0.0), 1);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 1.0), 4);
  EXPECT_DOUBLE_EQ(percentile({5}, 0.9), 5);
  EXPECT_EQ(percentile({}, 0.5), 0);
}

TEST(Percentile, NeverDecreasesWithPForNearlyEqualSamples) {
  std::mt19937_64 gen(1);
  std::uniform_real_distribution<double> u(1e-6, 1e-3);
  for (int i = 0; i < 100000; ++i) {
    const double a = u(gen);
    double b = a;
    for (int k = static_cast<int>(gen() % 4); k > 0; --k) b = std::nextafter(b, 1.0);
    const double p10 = percentile({a, b}, 0.1), p50 = percentile({a, b}, 0.5), p90 = percentile({b, a}, 0.9);
    ASSERT_LE(p10, p50) << a << " " << b;
    ASSERT_LE(p50, p90) << a << " " << b;
    ASSERT_GE(p10, a);
    ASSERT_LE(p90, b);
  }
}

}  // namespace
}  // namespace glam::exec
