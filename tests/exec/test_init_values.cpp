// Initial weights: drawn in blocks with a generator each, so that a large matrix fills on many
// threads; the blocking must not change a small matrix's values nor repeat one block's draws.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/layout.h"

namespace glam::exec {
namespace {

ParamInfo normal_matrix(int64_t rows, int64_t cols) {
  ParamInfo p;
  p.name = "embedding";
  p.rows = rows, p.cols = cols;
  p.init_std = 0.5;
  return p;
}

TEST(InitValues, BlocksKeepTheFirstBlocksValuesAndDrawFreshOnes) {
  const int64_t cols = 1000, rows = (5 * kInitBlockElements / 2) / cols;  // two and a half blocks
  ParamInfo big = normal_matrix(rows, cols), small = normal_matrix(kInitBlockElements / cols, cols);
  ASSERT_EQ(init_blocks(big), 3);
  ASSERT_EQ(init_blocks(small), 1);
  std::vector<double> all(static_cast<size_t>(big.matrix_elements())), first(small.matrix_elements());
  init_matrix(big, -1, 11, all.data());
  init_matrix(small, -1, 11, first.data());
  // A matrix of one block has the values the first block of a larger one has.
  for (size_t i = 0; i < first.size(); ++i) ASSERT_EQ(all[i], first[i]) << i;
  // The blocks are filled whole, and the values are normal with the asked deviation.
  double sum = 0, squares = 0;
  for (double v : all) sum += v, squares += v * v;
  const double n = static_cast<double>(all.size());
  EXPECT_NEAR(sum / n, 0.0, 5 * 0.5 / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(squares / n), 0.5, 0.005);
  // Block 1 is not block 0 again: their correlation is that of independent draws.
  double cross = 0;
  for (int64_t i = 0; i < kInitBlockElements; ++i) cross += all[i] * all[i + kInitBlockElements];
  EXPECT_LT(std::abs(cross / (0.25 * kInitBlockElements)), 5 / std::sqrt(double(kInitBlockElements)));
  // Filling block by block gives init_matrix's values, the last block short.
  std::vector<double> block(static_cast<size_t>(kInitBlockElements));
  for (int64_t b = 0; b < 3; ++b) {
    init_matrix_block(big, -1, 11, b, block.data());
    const int64_t len = std::min(kInitBlockElements, big.matrix_elements() - b * kInitBlockElements);
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(block[i], all[b * kInitBlockElements + i]) << b << " " << i;
  }
  // Other experts and seeds draw other values.
  init_matrix_block(big, 3, 11, 1, block.data());
  EXPECT_NE(block[0], all[kInitBlockElements]);
  init_matrix_block(big, -1, 12, 1, block.data());
  EXPECT_NE(block[0], all[kInitBlockElements]);
}

}  // namespace
}  // namespace glam::exec
