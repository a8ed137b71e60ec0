// Figures as the commands print them: three significant digits, units that keep the numbers short,
// never an exponent.
#include <gtest/gtest.h>

#include "common/text_table.h"

namespace glam {
namespace {

TEST(TextFormats, SecondsKeepThreeDigitsAndNoExponent) {
  EXPECT_EQ(format_seconds(7.9080), "7.91 s");
  EXPECT_EQ(format_seconds(0.0123), "12.3 ms");
  EXPECT_EQ(format_seconds(4.5e-6), "4.50 us");
  EXPECT_EQ(format_seconds(10.0), "10.0 s");  // beside 9.98 s in a column
  EXPECT_EQ(format_seconds(2.2), "2.20 s");
  EXPECT_EQ(format_digits(154.04, 4), "154.0");
  EXPECT_EQ(format_digits(999.96, 4), "1000");
  EXPECT_EQ(format_digits(9.9996, 4), "10.00");
  EXPECT_EQ(format_seconds(999.4), "999 s");
  EXPECT_EQ(format_seconds(1254.6), "1255 s");  // %.3g would print 1.25e+03
  EXPECT_EQ(format_seconds(999.7), "1000 s");
  EXPECT_EQ(format_seconds(0.9997), "1.00 s");
  EXPECT_EQ(format_seconds(0.9997e-3), "1.00 ms");
  EXPECT_EQ(format_duration(4.5 * 3600), "4.5 h");
  EXPECT_EQ(format_chips(1), "1 chip");
  EXPECT_EQ(format_chips(1024), "1024 chips");
}

// Counts take K, M, B and T; past those an exponent, not thousands of T.
TEST(TextFormats, CountsPastTheSuffixesTakeAnExponent) {
  EXPECT_EQ(format_count(1.2e12), "1.20T");
  EXPECT_EQ(format_count(999e12), "999T");
  EXPECT_EQ(format_count(1.180636797e18), "1.18e+18");
}

}  // namespace
}  // namespace glam
