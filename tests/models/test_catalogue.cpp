// Every GLaM row of the catalogue against the paper's Table 4.
#include <gtest/gtest.h>

#include <cmath>

#include "common/catalogue.h"
#include "model_table.h"

namespace glam {
namespace {

const std::vector<std::string> kPaperIds = {"glam-0.1b",      "glam-0.1b-64e", "glam-1.7b",   "glam-1.7b-32e",
                                            "glam-1.7b-64e",  "glam-1.7b-128e", "glam-1.7b-256e", "glam-8b",
                                            "glam-8b-64e",    "glam-137b",     "glam-64b-64e"};

TEST(Catalogue, HoldsAllElevenPaperRows) {
  auto ids = catalogue_ids("models");
  for (const auto& id : kPaperIds) {
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
    ModelConfig m = load_model(id);
    EXPECT_EQ(m.id, id);
    EXPECT_TRUE(m.from_paper);
    EXPECT_TRUE(m.paper_total_params && m.paper_activated_params) << id;
  }
}

class PaperRow : public ::testing::TestWithParam<std::string> {};

// Unflagged rows reproduce both printed counts; flagged rows must really disagree, so a
// flag can never hide a row that fits.
TEST_P(PaperRow, ReproducesThePaperOrIsFlaggedWithAReason) {
  ModelRow r = model_row(load_model(GetParam()));
  ASSERT_TRUE(r.total && r.activated);
  if (r.flagged()) {
    EXPECT_FALSE(r.total->agrees && r.activated->agrees)
        << GetParam() << " is flagged but agrees with the paper: total " << r.total->relative_difference
        << ", activated " << r.activated->relative_difference;
    EXPECT_GT(r.model.paper_note.size(), 40u);
  } else {
    EXPECT_TRUE(r.total->agrees) << GetParam() << " total off by " << r.total->relative_difference;
    EXPECT_TRUE(r.activated->agrees) << GetParam() << " activated off by " << r.activated->relative_difference;
    EXPECT_LE(std::fabs(r.activated->relative_difference), kPaperTolerance);
  }
}
INSTANTIATE_TEST_SUITE_P(Glam, PaperRow, ::testing::ValuesIn(kPaperIds),
                         [](const auto& param_info) {
                           std::string s = param_info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

TEST(Catalogue, Glam64b64eMatchesTheDerivedCounts) {
  ModelRow r = model_row(load_model("glam-64b-64e"));
  // 4*M*A*L + 3*M*H*L/2 + 2*M*H*E*L/2 + V*M (the parameter count that reproduces the paper's table), plus norms, router and bias.
  const double core = 4.0 * 8192 * 16384 * 64 + 3.0 * 8192 * 32768 * 32 + 2.0 * 8192 * 32768 * 64 * 32 + 262144.0 * 8192;
  EXPECT_NEAR(r.params.total, core, core * 2e-5);
  EXPECT_NEAR(r.params.total / 1e9, 1161.8, 0.5);
  EXPECT_NEAR(r.params.activated, 96.6e9, 96.6e9 * 0.01);
  const double inference_gflops = r.flops.forward() / 1e9;
  EXPECT_GT(inference_gflops, 160);  // paper: about 180 GFLOPs per token
  EXPECT_LT(inference_gflops, 210);
  EXPECT_DOUBLE_EQ(r.flops.train(), 3 * r.flops.forward());
}

TEST(Catalogue, Glam17b32eIsFlaggedBecauseThePaperIsInconsistent) {
  ModelRow r = model_row(load_model("glam-1.7b-32e"));
  EXPECT_TRUE(r.flagged());
  EXPECT_NEAR(r.params.total_without_embedding / 1e9, 13.9, 0.2);
  EXPECT_LT(r.total->relative_difference, -0.25);
}

TEST(Catalogue, MoeLayersAreEveryOtherBlock) {
  ModelConfig m = load_model("glam-8b-64e");
  EXPECT_EQ(m.moe_layers(), 16);
  EXPECT_EQ(m.dense_layers(), 16);
  EXPECT_FALSE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_moe_layer(1));
  EXPECT_EQ(m.capacity_per_group(), 32);  // 2 * 1024 / 64, already a multiple of 4
}

}  // namespace
}  // namespace glam
